"""Reference hygiene on a stored concept: per-view consistency, outliers, and the stored mask prototypes.

A bad reference view (another object, a box that cuts the object or holds mostly the hand) pulls detections toward
the wrong things (PeKit's own limitation). Each view's consistency is its leave-one-out cosine with the concept's
other views (`focuskit.core.hygiene`), computed from the stored box embeddings of the views as given (the
"original" variant), so it needs no encoder and costs one small matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from focuskit.core.errors import MemoryStoreError
from focuskit.core.hygiene import flag_outliers, view_consistency
from focuskit.memory.database import MemoryDatabase
from focuskit.memory.results import PruneReport, ViewConsistency
from focuskit.memory.views import MASK_PREFIX, display_source


def original_embeddings(db: MemoryDatabase, concept_id: int) -> tuple[list[tuple[int, int, str, str]], np.ndarray]:
    """The concept's views (id, position, source, how) and their "original" box embeddings (V, C), in order."""
    rows = db.query(
        "SELECT v.id, v.position, v.source, v.how, x.id, x.embedding FROM views v "
        "LEFT JOIN vectors x ON x.view_id = v.id AND x.variant = 'original' "
        "WHERE v.concept_id = ? ORDER BY v.position",
        (concept_id,),
    )
    dim = db.dim() or 0
    views, vecs = [], []
    for vid, pos, source, how, xid, blob in rows:
        if blob is None:
            raise MemoryStoreError(f"concept memory {db.directory} is corrupt: view {vid} has no embedding")
        views.append((int(vid), int(pos), display_source(str(source)), str(how)))
        vecs.append(db.vector(blob, int(xid), dim))
    return views, np.stack(vecs) if vecs else np.zeros((0, dim), np.float32)


def consistency(
    db: MemoryDatabase,
    concept_id: int,
    *,
    min_score: float | None = None,
    mad_k: float = 3.0,
    min_gap: float = 0.1,
) -> list[ViewConsistency]:
    """Per stored view: leave-one-out consistency score and outlier flag (see `focuskit.core.hygiene`)."""
    views, emb = original_embeddings(db, concept_id)
    report = flag_outliers(view_consistency(emb), min_score=min_score, mad_k=mad_k, min_gap=min_gap)
    return [
        ViewConsistency(
            view_id=vid, position=pos, source=source, how=how,
            score=None if np.isnan(report.scores[i]) else float(report.scores[i]),
            outlier=bool(report.outliers[i]), reason=report.reasons[i],
        )
        for i, (vid, pos, source, how) in enumerate(views)
    ]  # fmt: skip


def mask_embeddings(db: MemoryDatabase, concept_id: int) -> np.ndarray:
    """(M, C) mask-pooled embeddings of the concept's masked views and their variants; (0, C) when none."""
    rows = db.query(
        "SELECT id, embedding FROM vectors WHERE concept_id = ? AND variant LIKE ? ORDER BY id",
        (concept_id, f"{MASK_PREFIX}%"),
    )
    dim = db.dim() or 0
    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.stack([db.vector(blob, int(vid), dim) for vid, blob in rows])


def views_to_drop(name: str, current: list[ViewConsistency], view_ids: Sequence[int], outliers: bool) -> set[int]:
    """The view ids `prune` removes: `view_ids` (each must be one of the concept's) and, with `outliers`, the flagged
    ones; refuses to remove every view (the concept would be left without any)."""
    known = {c.view_id for c in current}
    unknown = sorted({int(v) for v in view_ids} - known)
    if unknown:
        listing = ", ".join(str(c.view_id) for c in current)
        raise MemoryStoreError(f"concept {name!r} has no view(s) {unknown}; its view ids: {listing}")
    drop = {int(v) for v in view_ids} | ({c.view_id for c in current if c.outlier} if outliers else set())
    if drop and drop >= known:
        raise MemoryStoreError(f"pruning would remove all {len(known)} view(s) of {name!r}; remove the concept instead")
    return drop


class CurationMixin:
    """`ConceptMemory`'s hygiene methods (kept here to keep the store module small); they use its database, its
    concept lookup and its serialized writes."""

    _db: MemoryDatabase
    if TYPE_CHECKING:  # provided by ConceptMemory

        def _unknown(self, name: str) -> str: ...

        def _write(self) -> Any: ...

    def _concept_id(self, name: str) -> int:
        rows = self._db.query("SELECT id FROM concepts WHERE name = ?", (name.strip(),))
        if not rows:
            raise MemoryStoreError(self._unknown(name))
        return int(rows[0][0])

    def mask_embeddings(self, name: str) -> np.ndarray:
        """(M, C) mask-pooled embeddings of the concept's masked views (and variants); (0, C) without masks.

        Not in the vector index: the detector uses them to re-rank its best box candidates when a segmenter is on.
        """
        return mask_embeddings(self._db, self._concept_id(name))

    def view_consistency(
        self, name: str, *, min_score: float | None = None, mad_k: float = 3.0, min_gap: float = 0.1
    ) -> list[ViewConsistency]:
        """Per stored view of `name`: its leave-one-out consistency with the other views and an outlier flag.

        Outliers: below `min_score` (if given), or (3+ views) more than `mad_k` robust sigmas and `min_gap` below
        the concept's median (`focuskit.core.hygiene.flag_outliers`). Reads stored embeddings only; no encoder.
        """
        return consistency(self._db, self._concept_id(name), min_score=min_score, mad_k=mad_k, min_gap=min_gap)

    def prune(
        self, name: str, *, view_ids: Sequence[int] = (), outliers: bool = False, min_score: float | None = None
    ) -> PruneReport:
        """Drop views of `name`: those in `view_ids`, and with `outliers` those `view_consistency` flags.

        One transaction; refuses to remove every view (remove the concept instead) and ids of other concepts.
        """
        cid = self._concept_id(name)
        current = self.view_consistency(name, min_score=min_score)
        drop = views_to_drop(name, current, view_ids, outliers)
        if drop:
            with self._write() as cur:
                cur.executemany("DELETE FROM views WHERE id = ? AND concept_id = ?", [(v, cid) for v in sorted(drop)])
        return PruneReport(name=name.strip(), removed=sorted(drop), kept=len(current) - len(drop))


__all__ = ["CurationMixin", "consistency", "mask_embeddings", "original_embeddings", "views_to_drop"]
