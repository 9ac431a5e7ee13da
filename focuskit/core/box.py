"""Boxes in pixel xyxy, and vectorised box maths.

A `Box` is always absolute pixels, (x1, y1) top-left inclusive and (x2, y2) bottom-right exclusive, as floats.
Every other coordinate space (xywh from tracking datasets, the 0-1000 integer grid Qwen2-VL writes, absolute pixels
of a resized model input) is converted at the edge with an explicitly named method, so the space is never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from focuskit.core.errors import BoxError

NORM_SCALE = 1000
"""Qwen2-VL's grounding grid: coordinates are integers in [0, 1000] relative to the image size."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in absolute pixels, xyxy."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        values = (self.x1, self.y1, self.x2, self.y2)
        if not all(isinstance(v, (int, float, np.floating, np.integer)) for v in values):
            raise BoxError(f"box coordinates must be numbers, got {values!r}")
        if not all(math.isfinite(float(v)) for v in values):
            raise BoxError(f"box coordinates must be finite, got {values!r}")
        for name in ("x1", "y1", "x2", "y2"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # --- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_xyxy(cls, values: Sequence[float]) -> Box:
        if len(values) != 4:
            raise BoxError(f"a box needs 4 numbers x1,y1,x2,y2, got {len(values)}: {list(values)!r}")
        return cls(*values)

    @classmethod
    def from_xywh(cls, values: Sequence[float]) -> Box:
        """From (x, y, width, height), the convention of GOT-10k, LaSOT and COCO/TAO."""
        if len(values) != 4:
            raise BoxError(f"a box needs 4 numbers x,y,w,h, got {len(values)}: {list(values)!r}")
        x, y, w, h = (float(v) for v in values)
        return cls(x, y, x + w, y + h)

    @classmethod
    def from_norm1000(cls, values: Sequence[float], image_size: tuple[int, int]) -> Box:
        """From Qwen2-VL's 0-1000 grid, relative to `image_size` = (width, height) of the original image."""
        if len(values) != 4:
            raise BoxError(f"a normalized box needs 4 numbers, got {len(values)}: {list(values)!r}")
        w, h = image_size
        x1, y1, x2, y2 = (float(v) for v in values)
        return cls(x1 * w / NORM_SCALE, y1 * h / NORM_SCALE, x2 * w / NORM_SCALE, y2 * h / NORM_SCALE)

    @classmethod
    def from_resized_pixels(
        cls, values: Sequence[float], resized_size: tuple[int, int], image_size: tuple[int, int]
    ) -> Box:
        """From absolute pixels of a resized model input (Qwen2.5-VL's convention) back to the original image."""
        rw, rh = resized_size
        w, h = image_size
        x1, y1, x2, y2 = (float(v) for v in values)
        return cls(x1 * w / rw, y1 * h / rh, x2 * w / rw, y2 * h / rh)

    # --- conversions --------------------------------------------------------------------------------------
    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def to_xywh(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)

    def to_norm1000(self, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Integers in [0, 1000]; rounding to the grid loses at most 0.05% of the side per coordinate."""
        w, h = image_size
        vals = (self.x1 / w, self.y1 / h, self.x2 / w, self.y2 / h)
        return tuple(int(min(NORM_SCALE, max(0, round(v * NORM_SCALE)))) for v in vals)  # type: ignore[return-value]

    def to_resized_pixels(
        self, image_size: tuple[int, int], resized_size: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        w, h = image_size
        rw, rh = resized_size
        vals = (self.x1 * rw / w, self.y1 * rh / h, self.x2 * rw / w, self.y2 * rh / h)
        return tuple(round(v) for v in vals)  # type: ignore[return-value]

    def to_array(self) -> np.ndarray:
        return np.array(self.to_xyxy(), dtype=np.float64)

    # --- geometry -----------------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def ordered(self) -> Box:
        """The same box with corners swapped where needed, since models sometimes write (x2, y2) first."""
        return Box(min(self.x1, self.x2), min(self.y1, self.y2), max(self.x1, self.x2), max(self.y1, self.y2))

    def clip(self, image_size: tuple[int, int]) -> Box:
        w, h = image_size
        return Box(
            min(max(self.x1, 0.0), w),
            min(max(self.y1, 0.0), h),
            min(max(self.x2, 0.0), w),
            min(max(self.y2, 0.0), h),
        )

    def scale(self, sx: float, sy: float | None = None) -> Box:
        sy = sx if sy is None else sy
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def validate(self, image_size: tuple[int, int] | None = None, *, where: str = "") -> Box:
        """Raise `BoxError` unless the box has positive area and (given a size) lies inside the image.

        Returns the box so it can be used inline. Half a pixel of slack absorbs rounding from xywh datasets.
        """
        at = f" ({where})" if where else ""
        if self.x2 <= self.x1 or self.y2 <= self.y1:
            raise BoxError(f"box {self.as_list()} has zero or negative area: need x2 > x1 and y2 > y1{at}")
        if image_size is not None:
            w, h = image_size
            eps = 0.5
            if self.x1 < -eps or self.y1 < -eps or self.x2 > w + eps or self.y2 > h + eps:
                raise BoxError(f"box {self.as_list()} lies outside the {w}x{h} image{at}")
        return self

    def as_list(self, ndigits: int | None = 2) -> list[float]:
        if ndigits is None:
            return list(self.to_xyxy())
        return [round(v, ndigits) for v in self.to_xyxy()]


def parse_box_arg(text: str) -> Box:
    """Read a command-line box 'x1,y1,x2,y2' (spaces allowed)."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise BoxError(f"box must be four numbers 'x1,y1,x2,y2', got {text!r}") from None
    if len(values) != 4:
        raise BoxError(f"box must be four numbers 'x1,y1,x2,y2', got {len(values)} in {text!r}")
    return Box.from_xyxy(values)


def _as_array(boxes: np.ndarray | Sequence[Box] | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(boxes, np.ndarray):
        arr = boxes.astype(np.float64, copy=False)
    else:
        rows = [b.to_xyxy() if isinstance(b, Box) else tuple(b) for b in boxes]
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BoxError(f"expected boxes of shape (N, 4), got {arr.shape}")
    return arr


def box_area_batch(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) xyxy boxes; inverted boxes count as 0."""
    b = _as_array(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou_batch(boxes_a: np.ndarray | Sequence[Box], boxes_b: np.ndarray | Sequence[Box]) -> np.ndarray:
    """Pairwise IoU, (N, 4) x (M, 4) xyxy -> (N, M). Empty inputs give an empty matrix; zero-area pairs give 0."""
    a, b = _as_array(boxes_a), _as_array(boxes_b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area_batch(a)[:, None] + box_area_batch(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def box_giou_batch(boxes_a: np.ndarray | Sequence[Box], boxes_b: np.ndarray | Sequence[Box]) -> np.ndarray:
    """Pairwise generalized IoU in [-1, 1], (N, 4) x (M, 4) -> (N, M)."""
    a, b = _as_array(boxes_a), _as_array(boxes_b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    iou_ = box_iou_batch(a, b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area_batch(a)[:, None] + box_area_batch(b)[None, :] - inter
    elt = np.minimum(a[:, None, :2], b[None, :, :2])
    erb = np.maximum(a[:, None, 2:], b[None, :, 2:])
    ewh = np.clip(erb - elt, 0, None)
    enclose = ewh[..., 0] * ewh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(enclose > 0, (enclose - union) / enclose, 0.0)
    return iou_ - penalty


def iou(a: Box | None, b: Box | None) -> float:
    """IoU of two optional boxes with the evaluation convention: both absent is a perfect 1, one absent is 0."""
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    return float(box_iou_batch([a], [b])[0, 0])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    b = _as_array(boxes)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise BoxError(f"nms needs one score per box, got {len(b)} boxes and {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou_batch(b[i : i + 1], b[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
