"""The trivial segmenter: the mask of a box is the box. The baseline every other segmenter is measured against."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.image import load_image
from focuskit.core.masks import box_to_mask
from focuskit.models.segmenters.base import box_array


class BoxSegmenter:
    """`mask_for_box` fills the box; `masks` gives the proposer's boxes filled (none without a proposer)."""

    name = "box"

    def __init__(self, proposer: Any | None = None) -> None:
        self.proposer = proposer

    def mask_for_box(self, image: Image.Image, box: Box | Any) -> np.ndarray:
        img = load_image(image)
        return box_to_mask(box_array(box, img.size), img.size)

    def masks(self, image: Image.Image) -> np.ndarray:
        img = load_image(image)
        boxes = np.zeros((0, 4)) if self.proposer is None else np.asarray(self.proposer.propose(img)).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, img.height, img.width), dtype=bool)
        return np.stack([box_to_mask(b, img.size) for b in boxes])
