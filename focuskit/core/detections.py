"""`Detections`: the one currency of detection results (boxes, scores, concept names), as aligned arrays."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from focuskit.core.box import Box, nms
from focuskit.core.errors import FocusError


@dataclass
class Detections:
    """N detections: `xyxy` (N, 4) float pixels, `scores` (N,), `names` (N,) concept names."""

    xyxy: np.ndarray
    scores: np.ndarray
    names: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if not self.names:
            self.names = [""] * len(self.xyxy)
        if not (len(self.xyxy) == len(self.scores) == len(self.names)):
            raise FocusError(
                f"Detections need aligned arrays: {len(self.xyxy)} boxes, {len(self.scores)} scores, "
                f"{len(self.names)} names"
            )

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros((0,)), [])

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box], scores: Sequence[float], names: Sequence[str]) -> Detections:
        return cls(np.array([b.to_xyxy() for b in boxes]).reshape(-1, 4), np.asarray(scores), list(names))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[tuple[Box, float, str]]:
        for row, s, n in zip(self.xyxy, self.scores, self.names, strict=True):
            yield Box(*row), float(s), n

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        idx = np.arange(len(self))[index]
        return Detections(self.xyxy[idx], self.scores[idx], [self.names[i] for i in np.atleast_1d(idx)])

    def with_nms(self, iou_threshold: float = 0.5, *, per_name: bool = True) -> Detections:
        """Suppress overlapping detections; per name by default so two concepts may overlap."""
        if len(self) == 0:
            return self
        if not per_name:
            return self[nms(self.xyxy, self.scores, iou_threshold)]
        keep: list[int] = []
        names = np.asarray(self.names, dtype=object)
        for name in dict.fromkeys(self.names):
            idx = np.flatnonzero(names == name)
            keep.extend(idx[nms(self.xyxy[idx], self.scores[idx], iou_threshold)].tolist())
        keep.sort(key=lambda i: -self.scores[i])
        return self[np.asarray(keep, dtype=np.int64)]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"concept": n, "box": [round(float(v), 2) for v in row], "score": round(float(s), 4)}
            for row, s, n in zip(self.xyxy, self.scores, self.names, strict=True)
        ]
