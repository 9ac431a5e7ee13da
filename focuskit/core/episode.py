"""The data that moves between datasets, localizers and evaluation.

An `Episode` is one k-shot question: k support images each with the target's box, and a query image whose box
(or `None` when the target is absent) is the answer. Images are kept as paths until something needs pixels, so a
million-episode JSONL file costs only its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.core.image import ImageInput, load_image

ImageRef = Path | Image.Image


def open_image(ref: ImageRef | ImageInput) -> Image.Image:
    """Pixels for an image reference (path or already-loaded image)."""
    return load_image(ref)


@dataclass(frozen=True)
class Support:
    """One example of the target: an image and the target's box in it (pixels, xyxy)."""

    image: ImageRef
    box: Box

    def load(self) -> Image.Image:
        return open_image(self.image)


@dataclass(frozen=True)
class Episode:
    """k supports and a query. `query_box is None` means the target is absent from the query."""

    id: str
    supports: tuple[Support, ...]
    query_image: ImageRef
    query_box: Box | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.supports) == 0:
            raise DatasetError(f"episode {self.id!r} has no supports: k must be >= 1")
        object.__setattr__(self, "supports", tuple(self.supports))

    @property
    def k(self) -> int:
        return len(self.supports)

    @property
    def is_absent(self) -> bool:
        return self.query_box is None

    def with_shots(self, k: int) -> Episode:
        """The same episode with only its first k supports."""
        if k < 1:
            raise DatasetError(f"shots must be >= 1, got {k}")
        if k > self.k:
            raise DatasetError(f"episode {self.id!r} has {self.k} supports, cannot take {k}")
        return replace(self, supports=self.supports[:k])


@dataclass(frozen=True)
class Prediction:
    """A localizer's answer: a box (or `None` for "not present") and a confidence score.

    `extra_boxes` holds further instances for multi-instance queries; `meta` carries engine-specific details
    (raw model text, parse failure reason, candidate count) for debugging and evaluation records.
    """

    box: Box | None
    score: float
    extra_boxes: tuple[Box, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_absent(self) -> bool:
        return self.box is None

    def to_json(self) -> dict[str, Any]:
        return {"box": None if self.box is None else self.box.as_list(), "score": round(float(self.score), 4)}


def validate_supports(supports: Sequence[Support], *, check_bounds: bool = True) -> list[Support]:
    """Raise a clear error for k=0 or a support box outside its image; return the supports as a list."""
    from focuskit.core.image import image_size

    if len(supports) == 0:
        raise DatasetError("no supports given: need at least one support image with a box (k >= 1)")
    out = []
    for i, s in enumerate(supports):
        size = image_size(s.image) if check_bounds else None
        where = f"support {i + 1}" + (f", {s.image}" if isinstance(s.image, (str, Path)) else "")
        s.box.validate(size, where=where)
        out.append(s)
    return out
