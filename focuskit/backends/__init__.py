"""Answer generation behind one protocol: a local Hugging Face VLM or any OpenAI-compatible chat endpoint.

`VLMBackend.generate(images, prompt)` is all personalization needs, so PeKit's answers work the same with the tiny
offline model, a local Qwen2-VL, a vLLM or Ollama server, or a hosted API. Backends import their heavy libraries
(transformers, httpx) only when constructed.
"""

from focuskit.backends.base import GenerationOptions, VLMBackend, prepare_images

__all__ = ["GenerationOptions", "VLMBackend", "create_backend", "prepare_images"]


def create_backend(kind: str, **kwargs: object) -> VLMBackend:
    """'hf' (kwargs: model, ...) or 'openai' (kwargs: base_url, model, ...); see each backend's constructor."""
    from focuskit.core.errors import ConfigError

    if kind == "hf":
        from focuskit.backends.hf import HFBackend

        return HFBackend.load(**kwargs)  # type: ignore[arg-type]
    if kind == "openai":
        from focuskit.backends.openai import OpenAIBackend, OpenAIConfig

        return OpenAIBackend(OpenAIConfig(**kwargs))  # type: ignore[arg-type]
    raise ConfigError(f"unknown backend {kind!r}; available: hf, openai")
