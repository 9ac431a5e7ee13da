"""Glue from the server's settings to the PeKit pieces: the VLM backend and the personalized answer.

Kept apart so the routes stay thin and only this module follows the backends' and personalization's signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from focuskit.core.detections import Detections
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


@dataclass
class CappedDetector:
    """The server's shared detector with one request's `max_instances`, for `personalize.answer.ask`, which calls
    `detect(image)`: every request shares one model and gets the instances it asked for."""

    inner: Any
    max_instances: int

    @property
    def memory(self) -> Any:
        return self.inner.memory

    def detect(self, image: Any, concepts: Sequence[str] | None = None, **_: Any) -> Detections:
        return self.inner.detect(image, concepts, max_instances=self.max_instances)

    def concept_scores(self, image: Any, concepts: Sequence[str] | None = None) -> dict[str, float]:
        return self.inner.concept_scores(image, concepts)


def personalized_answer(
    memory: Any, detector: Any, backend: Any, image: Image.Image, question: str, *, test_model: bool = False
) -> dict[str, Any]:
    """PeKit's answer pipeline (`focuskit.personalize.answer.ask`) with the server's shared detector, as JSON.

    Besides the answer it returns what the VLM was given, so the page can show the work: `prompt` (the exact text)
    and `prompted_image` (a PNG data URL of the exact image passed to the backend, boxes and legend drawn), and
    each detection's color, which is the one the prompt names.
    """
    from focuskit.personalize.answer import ask
    from focuskit.server.present import data_url, detections_json, near_misses_json

    answer = ask(image, question, memory, backend, detector=detector)
    tau = float(detector.inner.config.tau)
    return {
        "answer": answer.text,
        "personalized": answer.personalized,
        "detections": detections_json(memory, answer.detections),
        "tau": round(tau, 4),
        "near_misses": near_misses_json(answer.detections, tau, memory),
        "prompt": answer.prompt,
        "prompted_image": data_url(answer.annotated_image),
        "backend": getattr(backend, "name", type(backend).__name__),
        "test_model": test_model,
    }
