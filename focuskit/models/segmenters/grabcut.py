"""GrabCut seeded by a box: the offline default segmenter (OpenCV only, no weights).

The box is the "probably object" region and a margin of context around it the "surely background" samples that
GrabCut's colour models learn from. Work happens on a crop around the box scaled to `max_side` pixels (GrabCut's
cost grows with the pixel count), and the result is cleaned up: the largest connected region is kept and its holes
filled, since a reference object is one solid thing. When GrabCut keeps less than `min_fill` of the box (a failure:
object and background share their colours), the box itself is returned, so a mask is never worse than nothing.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from focuskit.core.box import Box
from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.core.masks import box_to_mask, mask_nms
from focuskit.models.segmenters.base import box_array


class GrabCutSegmenter:
    """Box-prompted GrabCut.

    `iterations` GrabCut rounds; `max_side` pixels for the longer side of the working crop; `context` the margin
    around the box, as a fraction of its size, that seeds the background; `min_fill` the smallest share of the box
    the mask may cover before falling back to the box; `largest_component`/`fill_holes` the clean-up. `masks(image)`
    segments the boxes of `proposer` (any object with `propose(image) -> (N, 4)`), at most `max_masks` of them.
    """

    name = "grabcut"

    def __init__(
        self,
        *,
        iterations: int = 4,
        max_side: int = 200,
        context: float = 0.25,
        min_fill: float = 0.15,
        largest_component: bool = True,
        fill_holes: bool = True,
        proposer: Any | None = None,
        max_masks: int = 20,
        seed: int = 0,
    ) -> None:
        if iterations < 1:
            raise ConfigError(f"grabcut iterations must be >= 1, got {iterations}")
        if max_side < 16:
            raise ConfigError(f"grabcut max_side must be >= 16 pixels, got {max_side}")
        if context < 0 or not 0 <= min_fill < 1:
            raise ConfigError(f"grabcut needs context >= 0 and 0 <= min_fill < 1, got {context} and {min_fill}")
        self.iterations = iterations
        self.max_side = max_side
        self.context = context
        self.min_fill = min_fill
        self.largest_component = largest_component
        self.fill_holes = fill_holes
        self.proposer = proposer
        self.max_masks = max_masks
        self.seed = seed

    def __repr__(self) -> str:
        return f"GrabCutSegmenter(iterations={self.iterations}, max_side={self.max_side}, context={self.context})"

    def mask_for_box(self, image: Image.Image, box: Box | Any) -> np.ndarray:
        """(H, W) bool mask of the object in `box` (pixels xyxy), never outside the box."""
        img = load_image(image)
        width, height = img.size
        x1, y1, x2, y2 = box_array(box, img.size)
        bw, bh = x2 - x1, y2 - y1
        # The crop: the box plus `context` on every side, clipped to the image.
        cx1, cy1 = int(max(0, np.floor(x1 - self.context * bw))), int(max(0, np.floor(y1 - self.context * bh)))
        cx2, cy2 = int(min(width, np.ceil(x2 + self.context * bw))), int(min(height, np.ceil(y2 + self.context * bh)))
        scale = min(1.0, self.max_side / max(cx2 - cx1, cy2 - cy1))
        cw, ch = max(1, round((cx2 - cx1) * scale)), max(1, round((cy2 - cy1) * scale))
        crop = np.asarray(img.crop((cx1, cy1, cx2, cy2)).resize((cw, ch), Image.Resampling.BILINEAR))
        rx1, ry1 = round((x1 - cx1) * scale), round((y1 - cy1) * scale)
        rx2, ry2 = round((x2 - cx1) * scale), round((y2 - cy1) * scale)
        if rx1 <= 0 and ry1 <= 0 and rx2 >= cw and ry2 >= ch:
            # The box is the whole image: GrabCut needs some background samples, so take the outer 2% as such.
            dx, dy = max(1, round(0.02 * cw)), max(1, round(0.02 * ch))
            rx1, ry1, rx2, ry2 = dx, dy, cw - dx, ch - dy
        rect = (int(rx1), int(ry1), int(max(1, rx2 - rx1)), int(max(1, ry2 - ry1)))
        fallback = box_to_mask((x1, y1, x2, y2), img.size)
        if rect[2] < 3 or rect[3] < 3:
            return fallback
        small = self._grabcut(crop, rect)
        if small is None:
            return fallback
        fg = cv2.resize(small.astype(np.uint8), (cx2 - cx1, cy2 - cy1), interpolation=cv2.INTER_NEAREST).astype(bool)
        out = np.zeros((height, width), dtype=bool)
        out[cy1:cy2, cx1:cx2] = fg
        out &= fallback
        if out.sum() < self.min_fill * fallback.sum():
            return fallback
        return out

    def _grabcut(self, crop: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray | None:
        bgr = np.ascontiguousarray(crop[:, :, ::-1])
        mask = np.zeros(crop.shape[:2], dtype=np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)  # GrabCut's k-means draws from OpenCV's RNG: same input, same mask
        try:
            cv2.grabCut(bgr, mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:
            return None  # degenerate colour statistics (e.g. a flat image): the caller falls back to the box
        fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        if not fg.any():
            return None
        if self.largest_component:
            labels, n = ndimage.label(fg)
            if n > 1:
                sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
                fg = labels == (int(np.argmax(sizes)) + 1)
        if self.fill_holes:
            fg = ndimage.binary_fill_holes(fg)
        return fg

    def masks(self, image: Image.Image) -> np.ndarray:
        """Masks of the proposer's boxes (best first, duplicates suppressed); needs `proposer=`."""
        img = load_image(image)
        if self.proposer is None:
            raise ConfigError(
                "GrabCutSegmenter.masks needs boxes to start from: create it with proposer= "
                "(e.g. create_proposer('ssd') or a GroundingDINO detector)"
            )
        boxes = np.asarray(self.proposer.propose(img), dtype=np.float64).reshape(-1, 4)[: self.max_masks]
        if len(boxes) == 0:
            return np.zeros((0, img.height, img.width), dtype=bool)
        masks = np.stack([self.mask_for_box(img, b) for b in boxes])
        return masks[mask_nms(masks, -np.arange(len(masks), dtype=np.float64), 0.7)]
