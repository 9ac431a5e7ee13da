"""The concept memory's vector index as a cache of its database, and the concept match built on it.

The index file (`index.zip`) is written atomically after each commit and stamped with the database generation it
was built from. A reader that finds the stamp behind the database (a crash between the commit and the index write,
or another process's change) patches the index by id difference; a missing or corrupt file, or a change of encoder,
rebuilds it from the stored vectors. The database is always the truth, so a stale or lost index file is never
wrong, only slower to open.

In the compressed regime (`focuskit.search.index`), candidates found on compressed codes are re-ranked with the
exact stored vectors, read from the database by id.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from focuskit.core.errors import MemoryStoreError
from focuskit.memory.database import MemoryDatabase
from focuskit.memory.results import ConceptScores
from focuskit.search.config import IndexConfig
from focuskit.search.index import FaissIndex

log = logging.getLogger(__name__)

INDEX_FILE = "index.zip"
INDEXED = "variant NOT LIKE 'mask%'"
"""SQL condition of the vectors the index holds: box-pooled ones; mask-pooled variants only re-rank (views.py)."""
SAVE_ALWAYS_MAX = 20_000
"""Up to this many vectors the index file (<= ~110 MB at 1376 dims) is rewritten after every change."""


class IndexCache:
    """The in-memory index, the vector id -> concept map, and the policy for writing the index file."""

    def __init__(self, db: MemoryDatabase, config: IndexConfig) -> None:
        self.db = db
        self.config = config
        self.path: Path = db.directory / INDEX_FILE
        self.index: FaissIndex | None = None
        self.encoder: str | None = None
        self.loaded_generation = -1
        self.file_generation = -1
        self.unsaved = 0
        self.vector_ids = np.zeros((0,), dtype=np.int64)
        self.vector_concepts = np.zeros((0,), dtype=np.int64)
        self.concept_names: dict[int, str] = {}

    def _fetch(self, ids: np.ndarray) -> np.ndarray:
        """Exact vectors by id for re-ranking (`FaissIndex`'s vector source)."""
        return self.db.vectors(ids, self.db.dim() or 1)

    # --- refreshing ---------------------------------------------------------------------------------------------
    def refresh(self, *, persist: bool = False) -> None:
        """Bring the in-memory index and id maps up to the database's generation.

        The index is patched by id difference (vector ids are never reused and vectors never change in place), so a
        stale index file after a crash, or changes by another process, cost only the vectors that differ. `persist`
        (set by writers, who hold the lock) writes the updated index file; readers write it only if the lock is free.
        """
        db = self.db
        with db.thread_lock, db.snapshot():
            gen = db.generation()
            if gen == self.loaded_generation and self.index is not None:
                return
            self.concept_names = {int(i): str(n) for i, n in db.query("SELECT id, name FROM concepts")}
            ids = db.query(f"SELECT id, concept_id FROM vectors WHERE {INDEXED} ORDER BY id")
            arr = np.asarray(ids, dtype=np.int64).reshape(-1, 2)
            self.vector_ids, self.vector_concepts = arr[:, 0].copy(), arr[:, 1].copy()
            encoder, dim = db.meta("encoder"), db.dim() or 1
            if self.index is not None and self.encoder == encoder and self.index.dim == dim:
                index, index_gen = self.index, self.loaded_generation
            else:
                index, index_gen = self._load_file(encoder, dim)
            if index is None or not self._sync(index):
                index = self._rebuild()
                self.unsaved = max(1, len(index))
            self.index, self.encoder, self.loaded_generation = index, encoder, gen
            if index_gen != gen and self.file_generation != gen:
                self.unsaved = max(self.unsaved, 1)
        if self.should_save(len(index)) and (persist or db.try_lock()):
            try:
                self.save(gen)
            finally:
                if not persist:
                    db.unlock()

    def should_save(self, size: int, *, final: bool = False) -> bool:
        """Rewrite the index file after every change while it is small; past `SAVE_ALWAYS_MAX` vectors, once 1% of
        it (at least 1000 vectors) changed, or when the memory is closed."""
        if self.unsaved <= 0:
            return False
        return final or size <= SAVE_ALWAYS_MAX or self.unsaved >= max(1000, size // 100)

    def save(self, gen: int) -> None:
        if self.index is None or self.db.generation() != gen:
            return
        try:
            self.index.save(self.path, {"generation": gen, "encoder": self.encoder})
        except OSError as exc:  # the index is a cache of the committed database: warn, never fail the write
            log.warning("could not write the vector index of %s (%s); it will be rebuilt", self.db.directory, exc)
            return
        self.file_generation = gen
        self.unsaved = 0

    def close(self) -> None:
        """Write a pending index update if no other writer holds the lock."""
        if self.index is not None and self.should_save(len(self.index), final=True) and self.db.try_lock():
            try:
                self.save(self.loaded_generation)
            finally:
                self.db.unlock()

    def _load_file(self, encoder: str | None, dim: int) -> tuple[FaissIndex | None, int]:
        if not self.path.is_file():
            return None, -1
        try:
            index, meta = FaissIndex.load(self.path, self.config, source=self._fetch)
        except MemoryStoreError as exc:
            log.warning("%s; rebuilding it from the stored embeddings", exc)
            return None, -1
        if meta.get("encoder") != encoder or index.dim != dim:
            return None, -1
        gen = int(meta.get("generation", -1))
        self.file_generation = gen
        return index, gen

    def _sync(self, index: FaissIndex) -> bool:
        """Patch `index` to hold exactly the database's vector ids; False if a rebuild would be cheaper."""
        have = np.sort(index.ids())
        want = self.vector_ids
        removed = np.setdiff1d(have, want, assume_unique=True)
        added = np.setdiff1d(want, have, assume_unique=True)
        if len(added) > max(1000, len(want) // 2):
            return False
        self.unsaved += len(added) + len(removed)
        if len(removed):
            index.remove(removed)
        dim = self.db.dim() or 1
        for start in range(0, len(added), 500):
            chunk = added[start : start + 500]
            index.add(self.db.vectors(chunk, dim), chunk)
        return len(index) == len(want)

    def _rebuild(self) -> FaissIndex:
        dim = self.db.dim()
        index = FaissIndex(dim or 1, self.config, source=self._fetch)
        if dim is None or not len(self.vector_ids):
            return index
        total = len(self.vector_ids)
        bar = tqdm(total=total, desc="rebuild index", unit="vec", disable=total < 50_000)
        last = -1
        while True:
            rows = self.db.query(
                f"SELECT id, embedding FROM vectors WHERE id > ? AND {INDEXED} ORDER BY id LIMIT 20000", (last,)
            )
            if not rows:
                break
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            index.add(np.stack([self.db.vector(r[1], r[0], dim) for r in rows]), ids)
            last = int(ids[-1])
            bar.update(len(rows))
        bar.close()
        return index

    # --- matching -----------------------------------------------------------------------------------------------
    def match(self, embeddings: np.ndarray, top_k: int) -> ConceptScores:
        """Best cosine per (query embedding, concept), over each concept's vectors among the `top_k` nearest."""
        self.refresh()
        assert self.index is not None  # set by refresh
        dim = self.db.dim()
        q = np.asarray(embeddings, dtype=np.float32)
        if q.ndim != 2 or (dim is not None and q.shape[1] != dim):
            raise MemoryStoreError(f"query embeddings must be (N, {dim}), got {q.shape}")
        if len(q) == 0 or len(self.vector_ids) == 0:
            return ConceptScores([], np.zeros((len(q), 0), dtype=np.float32))
        k = int(min(top_k, len(self.vector_ids)))
        with self.db.thread_lock:
            scores, ids = self.index.search(q, k)
        valid = ids >= 0
        pos = np.searchsorted(self.vector_ids, np.where(valid, ids, 0))
        pos = np.clip(pos, 0, len(self.vector_ids) - 1)
        valid &= self.vector_ids[pos] == ids
        concepts = np.where(valid, self.vector_concepts[pos], -1)
        present = sorted({int(c) for c in np.unique(concepts) if c >= 0})
        col = {c: j for j, c in enumerate(present)}
        out = np.full((len(q), len(present)), -np.inf, dtype=np.float32)
        rows, slots = np.nonzero(valid)
        cols = np.array([col[int(c)] for c in concepts[rows, slots]], dtype=np.int64)
        np.maximum.at(out, (rows, cols), scores[rows, slots])
        return ConceptScores([self.concept_names[c] for c in present], out)


__all__ = ["INDEXED", "INDEX_FILE", "SAVE_ALWAYS_MAX", "IndexCache"]
