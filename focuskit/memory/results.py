"""What the concept memory returns: add reports, concept listings, stored views and match scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from focuskit.core.box import Box


@dataclass(frozen=True)
class ViewReport:
    """What happened to one reference view in `add`: the region used (in the caller's image pixels) and how."""

    index: int
    source: str
    how: str
    """'box' (given), 'mask' (given), 'auto' (picked by auto-boxing) or 'skipped'."""
    box: Box | None
    score: float | None = None
    """Auto-boxing confidence in [0, 1] for how='auto'."""
    reason: str = ""
    masked: bool = False
    """A mask is stored with the view (given, or made by the segmenter)."""


@dataclass(frozen=True)
class AddReport:
    name: str
    views: list[ViewReport]
    replaced: bool
    vectors: int

    @property
    def used(self) -> list[ViewReport]:
        return [v for v in self.views if v.how != "skipped"]


@dataclass(frozen=True)
class ConceptInfo:
    name: str
    context: str
    color: int
    """Palette slot: the concept's box color in every image and frame (see `focuskit.viz.draw.PALETTE`)."""
    views: int
    vectors: int
    created: float


@dataclass(frozen=True)
class StoredView:
    """A stored reference view: the downscaled image, the object's box (and mask) in its pixels, a thumbnail."""

    id: int
    concept: str
    source: str
    how: str
    box: Box
    image: Image.Image
    mask: np.ndarray | None
    thumbnail: Image.Image


@dataclass(frozen=True)
class ViewConsistency:
    """How well one stored view agrees with the concept's other views (`ConceptMemory.view_consistency`).

    `score` is the leave-one-out cosine of the view's embedding with the mean of the other views' (None for a
    concept with a single view); `outlier` says whether `focuskit.core.hygiene.flag_outliers` flags it, and why.
    """

    view_id: int
    position: int
    source: str
    how: str
    score: float | None
    outlier: bool
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "view_id": self.view_id, "position": self.position, "source": self.source, "how": self.how,
            "score": None if self.score is None else round(self.score, 4), "outlier": self.outlier,
            "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class PruneReport:
    """What `ConceptMemory.prune` removed: the ids of the dropped views and how many views remain."""

    name: str
    removed: list[int]
    kept: int


@dataclass(frozen=True)
class ConceptScores:
    """Per query embedding, the best cosine with each concept's views: `scores` (N, C), -inf where unseen."""

    names: list[str]
    scores: np.ndarray


__all__ = ["AddReport", "ConceptInfo", "ConceptScores", "PruneReport", "StoredView", "ViewConsistency", "ViewReport"]
