"""Colour statistics inside a region, appended to any encoder's region embedding.

Pooled ImageNet features are trained to ignore colour (a red car and a blue car are both "car"), which is exactly
what tells two look-alikes apart: this red sweet among the blue ones, the grey hatchback next to the black saloon.
`ColourEncoder` wraps an encoder; its feature maps pool a box into

    [sqrt(1 - w) * inner, sqrt(w) * colour]

where `inner` is the wrapped encoder's (unit) region embedding and `colour` the unit square root of the region's
hue/saturation/grey histogram, so the cosine of two such vectors is exactly

    (1 - w) * cos(inner, inner') + w * Bhattacharyya(hist, hist')

Hue and saturation bins (and grey levels for unsaturated pixels) rather than RGB, so a darker photo of the same
object keeps its bins. The histogram is counted once per image at the feature grid's resolution (4x4 pixels per
cell sample) and pooled through the same summed-area table as the features, so a region costs no more than before.
Because it is one vector, the concept memory and the photo library store it like any other embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.models.encoders.base import Encoder, FeatureMap, l2_normalize

HUE_BINS = 12
SAT_BINS = 2
GREY_BINS = 3
BINS = HUE_BINS * SAT_BINS + GREY_BINS
GREY_SATURATION = 0.2
"""Pixels below this saturation (of 1) have no reliable hue: they count into grey bins by brightness instead."""
SAMPLES = 4
"""Pixels sampled per feature cell along each axis."""


def colour_histograms(image: Image.Image, grid_size: tuple[int, int]) -> np.ndarray:
    """(BINS, h, w) per-cell colour histograms (each cell's bins sum to 1) of `image` on a (w, h) cell grid."""
    gw, gh = grid_size
    small = cv2.resize(np.asarray(image.convert("RGB")), (gw * SAMPLES, gh * SAMPLES), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chroma = np.minimum((h * HUE_BINS).astype(np.int64), HUE_BINS - 1) * SAT_BINS
    chroma += np.minimum(((s - GREY_SATURATION) / (1 - GREY_SATURATION) * SAT_BINS).astype(np.int64), SAT_BINS - 1)
    grey = HUE_BINS * SAT_BINS + np.minimum((v * GREY_BINS).astype(np.int64), GREY_BINS - 1)
    bins = np.where(s < GREY_SATURATION, grey, chroma)
    onehot = np.zeros((gh * SAMPLES, gw * SAMPLES, BINS), dtype=np.float32)
    np.put_along_axis(onehot, bins[..., None], 1.0, axis=2)
    cells = onehot.reshape(gh, SAMPLES, gw, SAMPLES, BINS).mean(axis=(1, 3))
    return np.ascontiguousarray(cells.transpose(2, 0, 1))


@dataclass
class ColourFeatureMap(FeatureMap):
    """The wrapped map's features (for similarity maps), with region embeddings = inner + colour histogram."""

    inner: FeatureMap | None = None
    colour: FeatureMap | None = None
    colour_weight: float = 0.2
    _w: tuple[float, float] = field(default=(1.0, 0.0), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner is None or self.colour is None:
            raise ValueError("ColourFeatureMap needs the inner feature map and the colour histogram map")
        self._w = (math.sqrt(1.0 - self.colour_weight), math.sqrt(self.colour_weight))

    @property
    def dim(self) -> int:
        assert self.inner is not None
        return self.inner.dim + BINS

    def _join(self, inner: np.ndarray, hist: np.ndarray) -> np.ndarray:
        # `hist` rows come L2-normalised from pooling; sqrt then renormalising equals sqrt of the sum-1 histogram.
        colour = l2_normalize(np.sqrt(np.maximum(hist, 0.0)))
        return l2_normalize(np.concatenate([self._w[0] * inner, self._w[1] * colour], axis=1)).astype(np.float32)

    def pool_boxes(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        assert self.inner is not None and self.colour is not None
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._join(self.inner.pool_boxes(boxes), self.colour.pool_boxes(boxes))

    def pool_masks(self, masks: np.ndarray) -> np.ndarray:
        assert self.inner is not None and self.colour is not None
        m = np.asarray(masks)
        m = m[None] if m.ndim == 2 else m
        if len(m) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._join(self.inner.pool_masks(m), self.colour.pool_masks(m))

    def similarity(self, embedding: np.ndarray) -> np.ndarray:
        """The inner map's cosine map for the inner part of `embedding` ((dim,) or the inner dims; also (K, ...))."""
        assert self.inner is not None
        e = np.asarray(embedding, dtype=np.float32)
        if e.shape[-1] == self.dim:
            e = e[..., : self.inner.dim]
        return self.inner.similarity(e)


class ColourEncoder:
    """Any encoder, with colour statistics in its region embeddings (see the module doc). Tag: `<inner>+colour<w>`."""

    def __init__(self, inner: Encoder, *, colour_weight: float = 0.2) -> None:
        if not 0.0 < colour_weight < 1.0:
            raise ConfigError(f"colour_weight must be in (0, 1), got {colour_weight}")
        self.inner = inner
        self.colour_weight = float(colour_weight)
        self.name = f"{inner.name}+colour{self.colour_weight:g}"
        self.dim = int(inner.dim) + BINS
        self.stride = inner.stride

    def __repr__(self) -> str:
        return f"ColourEncoder({self.inner!r}, colour_weight={self.colour_weight})"

    def encode(self, image: Image.Image) -> ColourFeatureMap:
        fm = self.inner.encode(image)
        hist = FeatureMap(colour_histograms(image, fm.grid_size), fm.image_size)
        return ColourFeatureMap(fm.features, fm.image_size, inner=fm, colour=hist, colour_weight=self.colour_weight)
