"""Part-aware region embeddings: the whole box plus a g x g grid of its sub-boxes, in one vector.

`PartsEncoder` wraps any encoder. Its feature maps pool a box into

    [sqrt(1 - w) * whole, sqrt(w / g^2) * cell_1, ..., sqrt(w / g^2) * cell_{g^2}]

(each part L2-normalised first), so the cosine of two such vectors is exactly

    (1 - w) * cos(whole, whole') + w * mean_i cos(cell_i, cell_i')

the whole-box similarity mixed with a layout term that compares the top-left of one region with the top-left of
the other, and so on. Pooled features alone do not know where in the box a colour or texture sits (a person in a
red shirt and blue jeans pools like one in blue and red); the grid does. Because it is one vector, the concept
memory and the photo library store it like any embedding and a plain dot product scores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.models.encoders.base import Encoder, FeatureMap, l2_normalize


def grid_boxes(boxes_xyxy: np.ndarray, g: int) -> np.ndarray:
    """Split each of N boxes into a g x g grid of sub-boxes, row-major: (N, 4) -> (N * g * g, 4)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 1, 1, 4)
    steps = np.arange(g + 1, dtype=np.float64) / g
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    xs = b[..., 0] + w * steps[None, None, :]  # (N, 1, g+1)
    ys = b[..., 1] + h * steps[None, :, None]  # (N, g+1, 1)
    x1, x2 = xs[:, :, :-1], xs[:, :, 1:]
    y1, y2 = ys[:, :-1, :], ys[:, 1:, :]
    shape = (b.shape[0], g, g)
    out = np.stack([np.broadcast_to(v, shape) for v in (x1, y1, x2, y2)], axis=-1)
    return out.reshape(-1, 4)


@dataclass
class PartsFeatureMap(FeatureMap):
    """A `FeatureMap` whose region embeddings are whole box + layout grid (`dim` = C * (1 + g^2))."""

    grid: int = 3
    part_weight: float = 0.3
    part_channels: int | None = None
    """Channels the grid parts use (the first ones; None: all). With MobileNetV2 s16+s32, 96 = the stride-16 part:
    fine parts and texture for the layout, semantics for the whole box, at 2,240 instead of 13,760 dims."""
    _w: tuple[float, float] = field(default=(0.0, 0.0), init=False, repr=False, compare=False)
    _cells: FeatureMap | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._w = (math.sqrt(1.0 - self.part_weight), math.sqrt(self.part_weight / self.grid**2))
        c = int(self.features.shape[0])
        if self.part_channels is not None and not 1 <= self.part_channels <= c:
            raise ConfigError(f"part_channels must be in [1, {c}], got {self.part_channels}")

    @property
    def cell_channels(self) -> int:
        return self.channels if self.part_channels is None else self.part_channels

    def _cell_map(self) -> FeatureMap:
        if self._cells is None:
            f = self.features if self.part_channels is None else self.features[: self.part_channels]
            self._cells = FeatureMap(f, self.image_size)
        return self._cells

    @property
    def channels(self) -> int:
        """C, the feature channels of one cell."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return self.channels + self.cell_channels * self.grid**2

    def _join(self, whole: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        n, g, c = len(whole), self.grid, self.cell_channels
        cells = self._cell_map().pool_boxes(grid_boxes(boxes, g)).reshape(n, g * g * c)
        out = np.concatenate([self._w[0] * whole, self._w[1] * cells], axis=1)
        return l2_normalize(out).astype(np.float32)  # exact unit length unless a part pooled to zero

    def pool_boxes(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._join(FeatureMap.pool_boxes(self, boxes), boxes)

    def pool_masks(self, masks: np.ndarray) -> np.ndarray:
        """Whole part from the mask; grid parts from the sub-boxes of the mask's bounding box."""
        m = np.asarray(masks)
        m = m[None] if m.ndim == 2 else m
        whole = FeatureMap.pool_masks(self, m)
        if len(m) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        boxes = []
        for mi in m:
            ys, xs = np.nonzero(mi)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return self._join(whole, np.asarray(boxes, dtype=np.float64))

    def similarity(self, embedding: np.ndarray) -> np.ndarray:
        """Cosine of every cell with the whole-box part of `embedding` ((dim,) or (channels,); also (K, ...))."""
        e = np.asarray(embedding, dtype=np.float32)
        if e.shape[-1] == self.dim:
            e = e[..., : self.channels]
        if e.shape[-1] != self.channels or e.ndim not in (1, 2):
            raise ValueError(f"embedding must be ({self.dim},) or ({self.channels},), got shape {e.shape}")
        e = l2_normalize(e)
        return np.tensordot(e, self.unit, axes=([e.ndim - 1], [0]))


class PartsEncoder:
    """Any encoder, with part-aware region embeddings (see the module doc). Tag: `<inner>+parts<g>w<w>`."""

    def __init__(
        self, inner: Encoder, *, grid: int = 3, part_weight: float = 0.3, part_channels: int | None = None
    ) -> None:
        if grid < 1:
            raise ConfigError(f"parts grid must be >= 1, got {grid}")
        if not 0.0 <= part_weight <= 1.0:
            raise ConfigError(f"part_weight must be in [0, 1], got {part_weight}")
        self.inner = inner
        self.grid = int(grid)
        self.part_weight = float(part_weight)
        if part_channels is not None and not 1 <= part_channels <= inner.dim:
            raise ConfigError(f"part_channels must be in [1, {inner.dim}], got {part_channels}")
        self.part_channels = part_channels
        suffix = "" if part_channels is None else f"c{part_channels}"
        self.name = f"{inner.name}+parts{self.grid}w{self.part_weight:g}{suffix}"
        self.dim = int(inner.dim) + (int(inner.dim) if part_channels is None else part_channels) * self.grid**2
        self.stride = inner.stride

    def __repr__(self) -> str:
        return f"PartsEncoder({self.inner!r}, grid={self.grid}, part_weight={self.part_weight})"

    def encode(self, image: Image.Image) -> PartsFeatureMap:
        fm = self.inner.encode(image)
        return PartsFeatureMap(
            fm.features, fm.image_size, grid=self.grid, part_weight=self.part_weight, part_channels=self.part_channels
        )
