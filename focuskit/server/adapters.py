"""Glue from the server's settings to the PeKit pieces: the VLM backend and the personalized answer.

Kept apart so the routes stay thin and only this module follows the backends' and personalization's signatures.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from focuskit.server.settings import BackendSettings


def create_backend(cfg: BackendSettings) -> Any:
    """A `VLMBackend` for the configured kind ('hf' loads a local checkpoint, 'openai' talks to an endpoint)."""
    from focuskit.backends import create_backend as create

    if cfg.kind == "hf":
        return create("hf", model=cfg.model)
    return create(
        "openai",
        base_url=cfg.base_url,
        model=cfg.model or "default",
        api_key_env=cfg.api_key_env,
        timeout=cfg.timeout_s,
    )


def personalized_answer(memory: Any, detector: Any, backend: Any, image: Image.Image, question: str) -> dict[str, Any]:
    """PeKit's answer pipeline (`focuskit.personalize.answer.ask`) with the server's shared detector, as JSON."""
    from focuskit.personalize.answer import ask

    answer = ask(image, question, memory, backend, detector=detector)
    return {
        "answer": answer.text,
        "personalized": answer.personalized,
        "detections": answer.detections.to_json(),
        "prompt": answer.prompt,
    }
