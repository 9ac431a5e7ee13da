"""`LibraryVectors`: the library's proposal embeddings behind the one `VectorIndex` (`focuskit.search`).

Before, a search multiplied every stored float16 row with the concept's views: exact, but linear in the library
(~0.7 s per 10k photos, ~70 s at 1M). Now the rows are also held by a `FaissIndex`, exact while small and
`PCA256,IVF1024,PQ64` past `IndexConfig.exact_max` vectors, whose candidates are re-scored with the exact float16
rows read back from the shards (the source of truth), so returned scores are the same cosines as before.

Ids: vector id = item id * `ID_STRIDE` + the proposal's position in its item, so a hit maps to its photo without a
lookup, and ids survive shard compaction (which moves rows, not items).

Crash safety and incremental updates: the SQLite database counts content changes (`meta.generation`, bumped in the
transaction of every batch, removal and clear). The index file `vectors.index` records the generation it was
synced to. Whoever opens it with another generation reconciles it with the database: vectors of items no longer
stored are removed, those of new items read from their shards and added. So a run killed at any point leaves a
stale cache, never a wrong answer; the indexing run saves the synced index under its lock, searches only sync in
memory. Removal works in both regimes (`FaissIndex.remove`).
"""

from __future__ import annotations

import threading

import numpy as np

from focuskit.core.errors import MemoryStoreError
from focuskit.library.config import ID_STRIDE
from focuskit.library.records import ItemLocations
from focuskit.library.store import LibraryStore
from focuskit.search.config import IndexConfig
from focuskit.search.index import FaissIndex

INDEX_FILE = "vectors.index"
ADD_CHUNK = 200_000
"""Vectors read from the shards and added per step while syncing: bounds the memory a sync needs (~0.8 GB at 960
dims), and the first chunk past `exact_max` is what the compressed index is trained on."""


def item_of(ids: np.ndarray) -> np.ndarray:
    """Item id of each vector id."""
    return np.asarray(ids, dtype=np.int64) // ID_STRIDE


class LibraryVectors:
    """The vector index of one library state directory, synced to its database on use."""

    def __init__(self, store: LibraryStore, config: IndexConfig | None = None) -> None:
        self.store = store
        self.config = config or IndexConfig()
        self.path = store.state_dir / INDEX_FILE
        self.index: FaissIndex | None = None
        self._generation = -1
        """The database generation `index` holds."""
        self._locations: ItemLocations | None = None
        self._versions: tuple[int, int] = (-1, -1)
        self._shards: dict[str, np.ndarray] = {}
        self.lock = threading.RLock()
        """Held while the index is synced, saved or searched: the server searches while its indexing thread adds
        (FAISS indexes are not safe for concurrent add and search)."""

    # --- where rows are ---------------------------------------------------------------------------------------
    def locations(self) -> ItemLocations:
        """Every item's shard rows, re-read when the database changed (a batch, a removal, a compaction)."""
        versions = self.store.versions()
        if self._locations is None or versions != self._versions:
            self._locations, self._versions = self.store.locations()
            live = set(self._locations.shards)
            self._shards = {k: v for k, v in self._shards.items() if k in live}
        return self._locations

    def shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = self.store.load_shard(name)
        return self._shards[name]

    def exact(self, ids: np.ndarray) -> np.ndarray:
        """(N, dim) float32 stored embeddings of vector ids (the re-ranking source of the compressed index)."""
        locs = self.locations()
        ids = np.asarray(ids, dtype=np.int64)
        items, offset = ids // ID_STRIDE, ids % ID_STRIDE
        pos = np.searchsorted(locs.item_ids, items)
        pos = np.clip(pos, 0, max(0, len(locs.item_ids) - 1))
        if len(ids) and (len(locs.item_ids) == 0 or not (locs.item_ids[pos] == items).all()):
            raise MemoryStoreError("library index changed during the search; search again")
        rows = locs.start[pos] + offset
        out: np.ndarray | None = None
        for s in np.unique(locs.shard[pos]):
            arr = self.shard(locs.shards[int(s)])
            if out is None:
                out = np.empty((len(ids), arr.shape[1]), dtype=np.float32)
            sel = np.flatnonzero(locs.shard[pos] == s)
            out[sel] = arr[np.sort(rows[sel])][np.argsort(np.argsort(rows[sel]))]
        return out if out is not None else np.zeros((0, self.index.dim if self.index else 1), dtype=np.float32)

    def wanted_ids(self, locs: ItemLocations) -> np.ndarray:
        """(total rows,) vector ids of every stored proposal, sorted."""
        if len(locs.count) == 0:
            return np.zeros(0, dtype=np.int64)
        base = np.repeat(locs.item_ids * ID_STRIDE, locs.count)
        first = np.repeat(np.cumsum(locs.count) - locs.count, locs.count)
        return base + (np.arange(int(locs.count.sum()), dtype=np.int64) - first)

    # --- sync -------------------------------------------------------------------------------------------------
    def current(self, dim: int) -> FaissIndex:
        """The index, synced to the database's current generation (loaded from disk, then reconciled)."""
        with self.lock:
            generation = self.store.versions()[0]
            if self.index is not None and self.index.dim == dim and self._generation == generation:
                return self.index
            if self.index is None or self.index.dim != dim:
                self.index, self._generation = self._load(dim)
            if self._generation != generation:
                self._generation = self._reconcile(self.index)
            return self.index

    def _load(self, dim: int) -> tuple[FaissIndex, int]:
        if self.path.is_file():
            try:
                index, meta = FaissIndex.load(self.path, self.config, source=self.exact)
                if index.dim == dim and meta.get("encoder") == self.store.get_meta("encoder"):
                    return index, int(meta.get("generation", -1))
            except MemoryStoreError:
                pass  # a corrupt cache: rebuilt from the shards below
        return FaissIndex(dim, self.config, source=self.exact), -1

    def _reconcile(self, index: FaissIndex) -> int:
        """Make `index` hold exactly the stored proposals; returns the generation it now holds."""
        while True:
            locs = self.locations()
            generation = self._versions[0]
            wanted = self.wanted_ids(locs)
            have = np.sort(index.ids())
            stale = np.setdiff1d(have, wanted, assume_unique=True)
            if len(stale):
                index.remove(stale)
            missing = np.setdiff1d(wanted, have, assume_unique=True)
            for lo in range(0, len(missing), ADD_CHUNK):
                chunk = missing[lo : lo + ADD_CHUNK]
                index.add(self.exact(chunk), chunk)
            if self.store.versions()[0] == generation:  # no batch landed meanwhile
                return generation

    def sync_and_save(self, dim: int) -> None:
        """Sync the index and write it (atomically) for the next process; called by the indexing run, locked."""
        with self.lock:
            index = self.current(dim)
            index.save(self.path, meta={"generation": self._generation, "encoder": self.store.get_meta("encoder")})

    def forget(self) -> None:
        """Drop the cached index and its file (the encoder changed: every vector is recomputed)."""
        with self.lock:
            self.index, self._generation = None, -1
            self.path.unlink(missing_ok=True)


__all__ = ["ID_STRIDE", "INDEX_FILE", "LibraryVectors", "item_of"]
