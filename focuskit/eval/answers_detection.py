"""PeKit's detections for answer evaluation: run once per image, reused by every question and every rerun.

`CachedDetector` keys a detection by the pixels, the concepts asked for and `detector_signature` (the memory's
path, contents generation and encoder, and the detector's settings), in memory and optionally in a
`KeyValueCache` on disk, so a changed memory never reuses a stale detection. `NoDetector` finds nothing: the
plain and oracle modes send the question through the same `ask` path with the plain image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focuskit.backends.cache import KeyValueCache, image_digest
from focuskit.core.detections import Detections
from focuskit.core.image import ImageInput, load_image
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import Detector


class NoDetector:
    """Finds nothing: `ask` then sends the question unchanged with the plain image (the plain and oracle modes)."""

    def __init__(self, memory: ConceptMemory | None) -> None:
        self.memory = memory  # type: ignore[assignment]

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        return Detections.empty()

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        return {}


class CachedDetector:
    """A `Detector` whose `detect` runs once per distinct image (by pixel digest) for a given `signature`."""

    def __init__(self, detector: Detector, *, signature: str, store: KeyValueCache | None = None) -> None:
        self.detector = detector
        self.memory = detector.memory
        self.signature = signature
        self.store = store
        self._seen: dict[str, Detections] = {}
        self.runs = 0
        self.reused = 0

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        img = load_image(image)
        key = hashlib.sha256(
            json.dumps([self.signature, image_digest(img), sorted(concepts) if concepts else None]).encode()
        ).hexdigest()
        if key in self._seen:
            self.reused += 1
            return self._seen[key]
        stored = self.store.get(key) if self.store is not None else None
        if isinstance(stored, list):
            dets = _detections_from_json(stored)
            self.reused += 1
        else:
            dets = self.detector.detect(img, concepts)
            self.runs += 1
            if self.store is not None:
                self.store.put(key, dets.to_json())
        self._seen[key] = dets
        return dets

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        return self.detector.concept_scores(image, concepts)


def _detections_from_json(rows: list[dict[str, Any]]) -> Detections:
    import numpy as np

    if not rows:
        return Detections.empty()
    return Detections(
        np.asarray([r["box"] for r in rows], dtype=np.float64).reshape(-1, 4),
        np.asarray([r["score"] for r in rows], dtype=np.float64),
        [str(r["concept"]) for r in rows],
    )


def detector_signature(memory: ConceptMemory, detector: Detector) -> str:
    """What a cached detection depends on: the memory (path, contents generation, encoder) and the detector's
    settings. Any change to the memory bumps its generation, so stale detections are never reused."""
    config = getattr(detector, "config", None)
    return json.dumps(
        [str(Path(memory.directory).resolve()) if hasattr(memory, "directory") else id(memory),
         memory.generation(), memory.encoder_name, type(detector).__name__, repr(config)]
    )  # fmt: skip


__all__ = ["CachedDetector", "NoDetector", "detector_signature"]
