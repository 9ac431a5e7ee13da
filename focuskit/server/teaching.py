"""Find the object in reference photos before a concept is saved: auto-boxes (and masks) the page shows for editing.

The page's Teach tab sends its photos here first; the boxes (and masks) come back, the user corrects any that are
wrong, and only then is the concept created, with those boxes. Boxes are picked by the memory's own auto-boxing
(`focuskit.memory.autobox.pick_boxes`, jointly across the views and pulled towards the views that already have a
box) on the views downscaled as the memory stores them, so a preview costs what adding the concept costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.box import Box


@dataclass(frozen=True)
class FoundView:
    """One reference photo's object: `box` in the photo's own pixels, how it was found, and its mask if asked."""

    index: int
    box: Box | None
    how: str
    """'box' (given), 'auto' (picked) or 'none' (no candidate: the user must draw one)."""
    score: float | None
    mask: np.ndarray | None
    """(H, W) bool at the photo's size, or None."""

    def to_json(self) -> dict[str, Any]:
        from focuskit.core.masks import encode_rle

        out: dict[str, Any] = {
            "index": self.index,
            "box": None if self.box is None else self.box.as_list(),
            "how": self.how,
            "score": None if self.score is None else round(float(self.score), 4),
        }
        if self.mask is not None:
            out["mask"] = encode_rle(self.mask)
        return out


def _working_copy(memory: Any, image: Image.Image) -> tuple[Image.Image, float]:
    """The photo at the size the memory stores views at (`view_max_side`), and the scale applied."""
    side = memory.config.view_max_side
    scale = min(1.0, side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return image.convert("RGB"), scale


def find_views(
    memory: Any, images: Sequence[Image.Image], boxes: Sequence[Box | None], segmenter: Any | None = None
) -> list[FoundView]:
    """Box every photo that has no box (auto-boxing), and segment every box when a segmenter is given."""
    from focuskit.memory.autobox import pick_boxes

    work = [_working_copy(memory, img) for img in images]
    given = {
        i: b.validate(images[i].size, where=f"view {i + 1}").clip(images[i].size)
        for i, b in enumerate(boxes)
        if b is not None
    }
    todo = [i for i in range(len(images)) if i not in given]
    picks: dict[int, Any] = {}
    if todo:
        encoder = memory.encoder
        fmaps = {i: encoder.encode(work[i][0]) for i in range(len(images))}
        anchors = [fmaps[i].pool_boxes(b.scale(work[i][1]).to_array()[None])[0] for i, b in given.items()]
        found = pick_boxes(
            [work[i][0] for i in todo],
            [fmaps[i] for i in todo],
            memory.proposer,
            anchors=np.asarray(anchors, dtype=np.float32).reshape(-1, encoder.dim) if anchors else None,
        )
        picks = dict(zip(todo, found, strict=True))
    out = []
    for i, img in enumerate(images):
        small, scale = work[i]
        if i in given:
            box, how, score = given[i], "box", None
        elif picks.get(i) is not None:
            box, how, score = picks[i].box.scale(1.0 / scale).clip(img.size), "auto", picks[i].score
        else:
            out.append(FoundView(i, None, "none", None, None))
            continue
        mask = None
        if segmenter is not None:
            small_mask = np.asarray(segmenter.mask_for_box(small, box.scale(scale).clip(small.size)), dtype=bool)
            if small_mask.any():
                mask = np.asarray(Image.fromarray(small_mask).resize(img.size, Image.NEAREST)) > 0
        out.append(FoundView(i, box, how, score, mask))
    return out
