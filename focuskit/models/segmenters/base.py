"""The `Segmenter` protocol and helpers shared by every segmenter.

A segmenter turns a box into a mask (`mask_for_box`, for reference views and detections) and finds the object masks
of a whole image (`masks`, class-agnostic proposals). Masks are boolean arrays at the image's own size: (H, W) for
one, (N, H, W) for several, as in `focuskit.core.masks`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import BoxError


@runtime_checkable
class Segmenter(Protocol):
    """`mask_for_box(image, box)` -> (H, W) bool; `masks(image)` -> (N, H, W) bool, best first."""

    name: str

    def mask_for_box(self, image: Image.Image, box: Box | Any) -> np.ndarray: ...

    def masks(self, image: Image.Image) -> np.ndarray: ...


def box_array(box: Box | Any, image_size: tuple[int, int]) -> np.ndarray:
    """A `Box` or 4 numbers as xyxy clipped to the image; `BoxError` when nothing of it is inside."""
    values = np.asarray(box.to_xyxy() if isinstance(box, Box) else box, dtype=np.float64).reshape(-1)
    if values.shape != (4,):
        raise BoxError(f"a box needs 4 numbers x1,y1,x2,y2, got {values.tolist()}")
    width, height = image_size
    clipped = np.array(
        [np.clip(values[0], 0, width), np.clip(values[1], 0, height), np.clip(values[2], 0, width),
         np.clip(values[3], 0, height)]
    )  # fmt: skip
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        raise BoxError(f"box {values.round(2).tolist()} has less than one pixel inside the {width}x{height} image")
    return clipped


def masks_for_boxes(segmenter: Segmenter, image: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N, H, W) masks, batched when the segmenter has `masks_for_boxes` of its own."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    own = getattr(segmenter, "masks_for_boxes", None)
    if callable(own):
        return np.asarray(own(image, boxes), dtype=bool)
    width, height = image.size
    if len(boxes) == 0:
        return np.zeros((0, height, width), dtype=bool)
    return np.stack([segmenter.mask_for_box(image, b) for b in boxes])
