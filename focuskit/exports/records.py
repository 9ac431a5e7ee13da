"""`ImageResult`: one image's detections as the exporters take them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from focuskit.core.detections import Detections
from focuskit.core.errors import FocusError


@dataclass
class ImageResult:
    """The detections in one image, with the image's path (as it should appear in the export) and pixel size."""

    image: str
    width: int
    height: int
    detections: Detections
    best_scores: dict[str, float] = field(default_factory=dict)
    """The best score per concept, also below the threshold (a near miss); -inf when a concept had no candidate."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More per-image fields for the JSONL line (e.g. `ask`'s answer and prompt); the other formats ignore them."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise FocusError(f"{self.image}: image size must be positive, got {self.width}x{self.height}")
        masks = self.detections.masks
        if masks is not None and masks.shape[1:] != (self.height, self.width):
            raise FocusError(
                f"{self.image}: masks are {masks.shape[2]}x{masks.shape[1]} but the image is {self.width}x{self.height}"
            )


def concept_list(results: Sequence[ImageResult], concepts: Sequence[str] | None = None) -> list[str]:
    """The concepts in id order: `concepts` if given (every detected name must be in it), else names as first seen."""
    seen = list(dict.fromkeys(n for r in results for n in [*r.detections.names, *r.best_scores]))
    if concepts is None:
        return seen
    order = list(dict.fromkeys(concepts))
    missing = [n for n in seen if n not in order]
    if missing:
        raise FocusError(f"detected concept {missing[0]!r} is not in the concept list {order}")
    return order


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: a concept with no candidate at all is written as null."""
    return None if value != value or value in (float("inf"), float("-inf")) else round(float(value), 4)
