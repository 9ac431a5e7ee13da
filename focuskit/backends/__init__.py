"""Answer generation behind one protocol: a local Hugging Face VLM or any OpenAI-compatible chat endpoint.

`VLMBackend.generate(images, prompt)` is all personalization needs, so PeKit's answers work the same with the tiny
offline model, a local Qwen2-VL, a vLLM or Ollama server, or a hosted API. Backends import their heavy libraries
(transformers, httpx) only when constructed.
"""

from collections.abc import Callable
from typing import Any

from focuskit.backends.base import GenerationOptions, VLMBackend, prepare_images
from focuskit.core.registry import Registry

__all__ = ["BACKENDS", "GenerationOptions", "VLMBackend", "create_backend", "prepare_images"]


def _hf(**kwargs: Any) -> VLMBackend:
    from focuskit.backends.hf import HFBackend

    return HFBackend.load(**kwargs)


def _openai(**kwargs: Any) -> VLMBackend:
    from focuskit.backends.openai import OpenAIBackend, OpenAIConfig

    return OpenAIBackend(OpenAIConfig(**kwargs))


BACKENDS: Registry[Callable[..., VLMBackend]] = Registry("backend")
BACKENDS.register("hf", _hf)
BACKENDS.register("openai", _openai)


def create_backend(kind: str, **kwargs: object) -> VLMBackend:
    """'hf' (kwargs: model, ...) or 'openai' (kwargs: base_url, model, ...); see each backend's constructor."""
    return BACKENDS.create(kind, **kwargs)
