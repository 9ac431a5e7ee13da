"""Which frames of an annotated video become an episode's supports and query (the FOCUS paper's rule).

* A frame is usable when the target is visible, has a box, its image can be read and the box lies in the frame
  (`FrameChecker`, which decides once per frame and clips boxes sticking out by more than `BOX_SLACK_PX`);
* the query is the last usable frame (or the one the dataset fixes), and the k supports are spread evenly in time
  over the usable frames before it (`uniform_pick`), the sampling redone without any frame that fails its check
  (`select_frames`).

Kept apart from the builders so the rule can be read, and tested, on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from focuskit.core.box import Box
from focuskit.core.errors import ImageError
from focuskit.core.image import image_size
from focuskit.data.episode_config import EpisodeConfig
from focuskit.data.sequences import DataReport, TrackSequence

BOX_SLACK_PX = 0.5
"""Boxes may cross the border by this much (rounding in xywh annotations) before they are clipped and counted."""


class FrameChecker:
    """Decides, once per frame, whether a frame's target box is usable; repairs boxes slightly outside the frame."""

    def __init__(self, seq: TrackSequence, config: EpisodeConfig, report: DataReport) -> None:
        self.seq = seq
        self.config = config
        self.report = report
        self._cache: dict[int, tuple[Box, tuple[int, int] | None] | None] = {}

    def size(self, i: int) -> tuple[int, int] | None:
        if self.config.check_images:
            try:
                return image_size(self.seq.frames[i])
            except ImageError:
                return None
        return None if self.seq.frame_sizes is None else self.seq.frame_sizes[i]

    def __call__(self, i: int) -> tuple[Box, tuple[int, int] | None] | None:
        if i not in self._cache:
            self._cache[i] = self._check(i)
        return self._cache[i]

    def usable(self, i: int) -> tuple[Box, tuple[int, int] | None]:
        """The checked (box, size) of a frame already found usable; calling it on another frame is a bug."""
        checked = self(i)
        if checked is None:
            raise RuntimeError(f"frame {i} of {self.seq.name!r} is not usable; select frames before reading boxes")
        return checked

    def _check(self, i: int) -> tuple[Box, tuple[int, int] | None] | None:
        box = self.seq.boxes[i]
        where = f"{self.seq.name} frame {i} ({self.seq.frames[i]})"
        if box is None:
            return None
        size = self.size(i)
        if size is None and self.config.check_images:
            self.report.add("unreadable_image", str(self.seq.frames[i]))
            return None
        if size is not None:
            w, h = size
            if box.x1 >= w or box.y1 >= h or box.x2 <= 0 or box.y2 <= 0:
                self.report.add("box_outside_frame", where)
                return None
            if (
                box.x1 < -BOX_SLACK_PX
                or box.y1 < -BOX_SLACK_PX
                or box.x2 > w + BOX_SLACK_PX
                or box.y2 > h + BOX_SLACK_PX
            ):
                self.report.add("box_clipped_to_frame", where)
            box = box.clip(size)
            if box.area <= 0:
                self.report.add("box_outside_frame", where)
                return None
            if box.area < self.config.min_box_fraction * w * h:
                self.report.add("box_too_small", where)
                return None
        return box, size


def uniform_pick(pool: Sequence[int], k: int) -> list[int]:
    """k frame indices from the sorted `pool`, spread evenly in time from its first to its last entry.

    Targets are `linspace(pool[0], pool[-1], k)`; each is snapped to the nearest pool entry not taken yet
    (the earlier one on ties). Requires `len(pool) >= k`.
    """
    if k == 1:
        return [pool[0]]
    taken: list[int] = []
    free = list(pool)
    for target in np.linspace(pool[0], pool[-1], k):
        j = min(range(len(free)), key=lambda m: (abs(free[m] - target), free[m]))
        taken.append(free.pop(j))
    return sorted(taken)


def select_frames(seq: TrackSequence, k: int, check: FrameChecker, query_gap: int = 0) -> tuple[list[int], int] | str:
    """(support frames, query frame) for one sequence and k, or the reason it has none."""
    bad: set[int] = set()
    usable = seq.usable_indices()
    while True:
        cand = [i for i in usable if i not in bad]
        if seq.query_index is not None:
            q = seq.query_index
            if q not in cand:
                return "query_frame_unusable"
        elif not cand:
            return "no_usable_frame"
        else:
            q = cand[-1]
        if check(q) is None:
            bad.add(q)
            if seq.query_index is not None:
                return "query_frame_unusable"
            continue
        pool = [i for i in cand if i != q and abs(i - q) > query_gap]
        if len(pool) < k:
            return "too_few_usable_frames"
        picks = uniform_pick(pool, k)
        failed = [i for i in picks if check(i) is None]
        if not failed:
            return picks, q
        bad.update(failed)
