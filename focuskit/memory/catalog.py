"""The SQL behind `ConceptMemory`'s concept, view and vector rows: reading them into result types, and writing one
prepared view. Kept out of the facade (`focuskit.memory.store`) so that module reads as the API and its
transactions; the schema itself is `focuskit.memory.database`'s."""

from __future__ import annotations

import sqlite3

import numpy as np

from focuskit.core.box import Box
from focuskit.core.errors import ConceptNameError, MemoryStoreError
from focuskit.core.names import check_concept_name
from focuskit.memory.database import MemoryDatabase
from focuskit.memory.index_cache import INDEXED
from focuskit.memory.results import ConceptInfo, StoredView
from focuskit.memory.views import PreparedView, ViewPreparer, decode_image, decode_mask, display_source
from focuskit.viz.draw import PALETTE


def check_name(name: str) -> str:
    """`name` stripped, or a `MemoryStoreError` saying which part of the one concept-name rule it breaks.

    The rule is `focuskit.core.names.check_concept_name`, the same one the CLI, the API and the page apply, so a
    concept added from Python can always be addressed by name in a URL or a CLI argument later. Only new names
    (add, rename) are checked; lookups take any stored name, so a memory written before the rule still opens.
    """
    try:
        return check_concept_name(name)
    except ConceptNameError as err:
        raise MemoryStoreError(str(err)) from None


def concept_infos(db: MemoryDatabase) -> list[ConceptInfo]:
    """Every concept with its view and indexed-vector counts, in the order they were added."""
    rows = db.query(
        "SELECT c.name, c.context, c.color, c.created, "
        "(SELECT COUNT(*) FROM views v WHERE v.concept_id = c.id), "
        f"(SELECT COUNT(*) FROM vectors x WHERE x.concept_id = c.id AND x.{INDEXED}) FROM concepts c ORDER BY c.id"
    )
    return [ConceptInfo(n, ctx, int(col), int(nv), int(nx), float(t)) for n, ctx, col, t, nv, nx in rows]


def stored_views(db: MemoryDatabase, name: str) -> list[StoredView]:
    """The stored views of concept `name` (already stripped), decoded, in their order; [] for an unknown name."""
    rows = db.query(
        "SELECT v.id, v.source, v.how, v.x1, v.y1, v.x2, v.y2, v.image, v.mask, v.thumbnail FROM views v "
        "JOIN concepts c ON c.id = v.concept_id WHERE c.name = ? ORDER BY v.position",
        (name,),
    )
    return [
        StoredView(
            id=int(vid),
            concept=name,
            source=display_source(source),
            how=how,
            box=Box(x1, y1, x2, y2),
            image=decode_image(img, f"view {vid}"),
            mask=None if mask is None else decode_mask(mask, f"mask of view {vid}"),
            thumbnail=decode_image(thumb, f"thumbnail of view {vid}"),
        )
        for vid, source, how, x1, y1, x2, y2, img, mask, thumb in rows
    ]


def indexed_vectors(db: MemoryDatabase, name: str) -> np.ndarray:
    """(V, C) indexed embeddings of concept `name` (already stripped), by vector id; (0, C) when there are none."""
    rows = db.query(
        "SELECT x.id, x.embedding FROM vectors x JOIN concepts c ON c.id = x.concept_id WHERE c.name = ? "
        f"AND x.{INDEXED} ORDER BY x.id",
        (name,),
    )
    dim = db.dim() or 0
    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.stack([db.vector(blob, vid, dim) for vid, blob in rows])


def free_color(cur: sqlite3.Cursor) -> int:
    """The palette entry fewest concepts use (the lowest on ties), so colours stay distinct as concepts come."""
    used = [int(r[0]) for r in cur.execute("SELECT color FROM concepts").fetchall()]
    counts = [used.count(i) for i in range(len(PALETTE))]
    return int(np.argmin(counts))


def insert_view(cur: sqlite3.Cursor, concept_id: int, position: int, p: PreparedView, preparer: ViewPreparer) -> None:
    """One prepared view and its vectors, inside the caller's transaction."""
    cur.execute(
        "INSERT INTO views(concept_id, position, source, how, score, width, height, x1, y1, x2, y2, image, mask, "
        "thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            concept_id, position, p.source, p.how, p.score, p.image.width, p.image.height, *p.box.to_xyxy(),
            p.jpeg, preparer.mask_png(p.mask), preparer.thumbnail(p.image, p.box),
        ),
    )  # fmt: skip
    view_id = int(cur.lastrowid or 0)
    cur.executemany(
        "INSERT INTO vectors(view_id, concept_id, variant, embedding) VALUES (?, ?, ?, ?)",
        [(view_id, concept_id, variant, vec.astype(np.float32).tobytes()) for variant, vec in p.vectors],
    )


__all__ = ["check_name", "concept_infos", "free_color", "indexed_vectors", "insert_view", "stored_views"]
