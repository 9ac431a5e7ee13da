"""From a concept's view embeddings to the library items that show it: the two ways of finding the stored items
whose best proposal reaches tau (the vector index, `query_items`; every stored row, `scan_items`), and the `Hit`
of an item (`to_hit`). `LibraryIndex.search` picks the way and orders the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from focuskit.core.box import Box, nms
from focuskit.core.errors import MemoryStoreError
from focuskit.library.records import ItemRow
from focuskit.library.results import Hit
from focuskit.library.scoring import max_cosine
from focuskit.library.store import LibraryStore
from focuskit.library.vectors import LibraryVectors, item_of

Found = tuple[float, ItemRow, np.ndarray]
"""(best score, item, the scores of its proposals)."""


def stored_dim(store: LibraryStore, vectors: LibraryVectors) -> int | None:
    """The width of the stored embeddings (None while nothing is stored)."""
    locs = vectors.locations()
    if len(locs.shards) == 0:
        return None
    return int(store.load_shard(locs.shards[0]).shape[1])


def check_dim(dim: int, views: np.ndarray) -> None:
    """Refuse to compare a library's embeddings with concept views of another width (another encoder)."""
    if dim != views.shape[1]:
        raise MemoryStoreError(
            f"library embeddings have {dim} dims but the concept views {views.shape[1]}; "
            "the library and the memory were made with different encoders"
        )


def query_items(
    store: LibraryStore, vectors: LibraryVectors, views: np.ndarray, tau: float, root: str | None, top: int | None,
    *, candidates: int,
) -> list[Found]:  # fmt: skip
    """(best score, item, its proposals' scores) of the items the vector index finds at or above `tau`."""
    dim = stored_dim(store, vectors)
    if dim is None:
        return []
    check_dim(dim, views)
    with vectors.lock:
        index = vectors.current(dim)
        n = len(index)
        if n == 0:
            return []
        k = n if not index.approximate else min(n, max(candidates, top or 0))
        scores, ids = index.search(views, k)
    keep = (ids >= 0) & (scores >= tau)
    items, best = item_of(ids[keep]), scores[keep]
    if root is not None:
        locs = vectors.locations()
        pos = np.searchsorted(locs.item_ids, items)
        wanted = locs.roots.index(root) if root in locs.roots else -1
        inside = (pos < len(locs.item_ids)) & (locs.root[np.minimum(pos, len(locs.root) - 1)] == wanted)
        items, best = items[inside], best[inside]
    if len(items) == 0:
        return []
    order = np.lexsort((-best, items))  # by item, best first
    items, best = items[order], best[order]
    first = np.concatenate([[True], items[1:] != items[:-1]])
    items, best = items[first], best[first]
    rank = np.argsort(-best, kind="stable")
    if top is not None:
        rank = rank[: max(top, 1)]
    rows = store.items_by_id([int(i) for i in items[rank]])
    views_t = np.ascontiguousarray(views.T, dtype=np.float32)
    out = []
    for row in rows:
        emb = vectors.shard(row.shard)[row.start : row.start + row.count].astype(np.float32)
        scores_row = (emb @ views_t).max(axis=1)
        out.append((float(scores_row.max()), row, scores_row))
    return out


def scan_items(
    store: LibraryStore, vectors: LibraryVectors, views: np.ndarray, tau: float, root: str | None, path: str | None
) -> list[Found]:
    """(best score, item, its proposals' scores) of every item whose best proposal reaches `tau`: every stored
    row multiplied with the views."""
    items = store.items(root=root, file_path=path)
    found: list[tuple[float, ItemRow, np.ndarray]] = []
    by_shard: dict[str, list[ItemRow]] = {}
    for it in items:
        by_shard.setdefault(it.shard, []).append(it)
    views_t = np.ascontiguousarray(views.T, dtype=np.float32)
    for shard, rows in by_shard.items():
        emb = vectors.shard(shard)
        check_dim(int(emb.shape[1]), views)
        starts = np.fromiter((r.start for r in rows), dtype=np.int64, count=len(rows))
        counts = np.fromiter((r.count for r in rows), dtype=np.int64, count=len(rows))
        row_scores = max_cosine(emb, views_t, int((starts + counts).max()))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        live = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts, strict=True)])
        scores = row_scores[live]
        best = np.maximum.reduceat(scores, offsets)
        for i in np.flatnonzero(best >= tau):
            found.append((float(best[i]), rows[i], scores[offsets[i] : offsets[i] + counts[i]]))
    return found


def to_hit(row: ItemRow, scores: np.ndarray, tau: float, *, max_boxes: int, nms_iou: float) -> Hit:
    """The `Hit` of one item: its best proposal, or (`max_boxes` > 1) the proposals above `tau` after NMS."""
    k = max_boxes
    if k == 1:
        keep = np.array([int(np.argmax(scores))])
    else:
        # NMS over the best few only: the k survivors are almost always among the top 10k candidates.
        above = np.flatnonzero(scores >= tau)
        above = above[np.argsort(-scores[above], kind="stable")[: 10 * k]]
        keep = above[nms(row.boxes[above], scores[above], nms_iou)][:k]
    root = Path(row.root)
    return Hit(
        image=root / row.path,
        root=root,
        path=row.path,
        frame=row.frame,
        time_s=row.time_s,
        boxes=tuple(Box(*map(float, row.boxes[k])) for k in keep),
        scores=tuple(float(scores[k]) for k in keep),
        width=row.width,
        height=row.height,
    )


__all__ = ["Found", "check_dim", "query_items", "scan_items", "stored_dim", "to_hit"]
