"""Boxes of chosen sizes and aspect ratios: around given points, or tiled over the whole image.

These need no model. Around the peaks of a similarity map they add candidates of the supports' own size (which a
COCO detector may never propose for an unusual object); tiled, they are a weights-free `Proposer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from focuskit.core.errors import ConfigError


def boxes_around_points(
    points_xy: np.ndarray,
    sizes_wh: np.ndarray,
    image_size: tuple[int, int],
    *,
    scales: Sequence[float] = (1.0,),
    aspect_ratios: Sequence[float] = (1.0,),
) -> np.ndarray:
    """Every point x size x scale x aspect-ratio box, centred on the point and clipped to the image: (N, 4) xyxy.

    `sizes_wh` (S, 2) are reference (width, height) in pixels; a scale multiplies both sides, an aspect ratio r
    multiplies the width by sqrt(r) and divides the height by sqrt(r), so the area stays. Boxes that lose more than
    half their area to clipping are kept (an object at the border is cut too), empty ones are dropped.
    """
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes_wh, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0 or len(sizes) == 0:
        return np.zeros((0, 4))
    s = np.asarray(scales, dtype=np.float64)
    r = np.sqrt(np.asarray(aspect_ratios, dtype=np.float64))
    # (S, scales, ratios, 2) widths/heights
    w = sizes[:, 0, None, None] * s[None, :, None] * r[None, None, :]
    h = sizes[:, 1, None, None] * s[None, :, None] / r[None, None, :]
    wh = np.stack([w, h], -1).reshape(-1, 2)
    centres = np.repeat(pts, len(wh), axis=0)
    whs = np.tile(wh, (len(pts), 1))
    boxes = np.concatenate([centres - whs / 2, centres + whs / 2], axis=1)
    width, height = image_size
    boxes = np.clip(boxes, 0, [width, height, width, height])
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[keep]


class WindowProposer:
    """Sliding windows: for each size fraction of the shorter image side and aspect ratio, a grid with `overlap`."""

    def __init__(
        self,
        *,
        sizes: Sequence[float] = (0.15, 0.25, 0.4, 0.6, 0.85),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        overlap: float = 0.5,
    ) -> None:
        if not sizes or any(not 0 < f <= 1 for f in sizes):
            raise ConfigError(f"window sizes must be fractions in (0, 1] of the shorter side, got {list(sizes)}")
        if not aspect_ratios or any(a <= 0 for a in aspect_ratios):
            raise ConfigError(f"window aspect_ratios must be positive, got {list(aspect_ratios)}")
        if not 0 <= overlap < 1:
            raise ConfigError(f"window overlap must be in [0, 1), got {overlap}")
        self.sizes = tuple(sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        self.overlap = overlap

    def propose(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        out = []
        for frac in self.sizes:
            for ar in self.aspect_ratios:
                bw = min(width, frac * min(width, height) * np.sqrt(ar))
                bh = min(height, frac * min(width, height) / np.sqrt(ar))
                xs = self._starts(width, bw)
                ys = self._starts(height, bh)
                gx, gy = np.meshgrid(xs, ys)
                x1, y1 = gx.ravel(), gy.ravel()
                out.append(np.stack([x1, y1, x1 + bw, y1 + bh], 1))
        return np.concatenate(out, 0)

    def _starts(self, extent: float, size: float) -> np.ndarray:
        step = max(1.0, size * (1 - self.overlap))
        n = int(np.floor((extent - size) / step)) + 1
        starts = np.arange(max(n, 1)) * step
        # Shift the grid so the last window touches the far border too.
        slack = extent - size - (starts[-1] if len(starts) else 0)
        return starts + max(slack, 0) / 2
