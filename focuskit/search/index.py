"""Vector search over reference-view embeddings: the `VectorIndex` protocol and its FAISS implementation.

Why FAISS (+ SQLite for metadata, see `store.py`) rather than LanceDB: FAISS is already a dependency, is the
reference implementation of exact and IVF search, serializes an index into one byte buffer we can write atomically
and checksum, and has no background compaction or versioned table files whose crash behaviour we would have to
reason about. LanceDB would add a new dependency (and Arrow) for features a personal memory does not need.

Two regimes, switched automatically:
* below `exact_max` vectors, an exact inner-product index (`IndexFlatIP` behind an id map): at 50k views of 1280
  dims a query is a 64M multiply-add scan, a few milliseconds, and results are exact;
* past it, an inverted-file index with 8-bit scalar quantization (`IVF{nlist},SQ8`), trained once on the vectors
  present at the switch. SQ8 stores a 1280-dim view in 1.3 kB instead of 5 kB, so a million views fit in ~1.3 GB of
  RAM, and a query scans only `nprobe` of `nlist` lists. Ids are preserved; removal works in both regimes.

Vectors are expected L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from focuskit.core.errors import ConfigError, MemoryStoreError
from focuskit.core.io import atomic_open
from focuskit.search.config import IndexConfig

INDEX_FORMAT_VERSION = 1


VectorSource = Callable[[np.ndarray], np.ndarray]
"""(N,) int64 ids -> (N, dim) float32 exact vectors, in that order: where a compressed index re-ranks from."""


@runtime_checkable
class VectorIndex(Protocol):
    """An id-keyed store of unit vectors answering top-k inner-product queries."""

    dim: int

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (N, dim) float32 vectors under (N,) int64 ids (ids must be new)."""

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; returns how many were removed."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) queries -> (scores (Q, k) float32, ids (Q, k) int64); missing slots have id -1."""

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """Write atomically with a checksum; `meta` is stored alongside (e.g. the store's generation)."""


def _as_vectors(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise MemoryStoreError(f"{what} must have shape (N, {dim}), got {tuple(np.shape(vectors))}")
    if not np.isfinite(arr).all():
        raise MemoryStoreError(f"{what} contain NaN or infinite values")
    return arr


def _as_ids(ids: np.ndarray, n: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if n is not None and len(arr) != n:
        raise MemoryStoreError(f"need one id per vector: {n} vectors, {len(arr)} ids")
    return arr


class FaissIndex:
    """`VectorIndex` over FAISS: exact below `config.exact_max` vectors, IVF past it (see the module doc)."""

    def __init__(self, dim: int, config: IndexConfig | None = None, *, source: VectorSource | None = None) -> None:
        if dim < 1:
            raise ConfigError(f"index dimension must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or IndexConfig()
        self.source = source
        """Exact vectors by id, for re-ranking compressed-code candidates (the store's source of truth)."""
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    # --- state ----------------------------------------------------------------------------------------------
    @property
    def approximate(self) -> bool:
        """True once the index has switched to inverted-file search."""
        return not isinstance(self._index, faiss.IndexIDMap2)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All stored ids, (N,) int64 (order unspecified)."""
        if not self.approximate:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._index)
        invlists = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if invlists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0,), dtype=np.int64)

    # --- mutation -------------------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = _as_vectors(vectors, self.dim, "vectors")
        i = _as_ids(ids, len(x))
        if len(x) == 0:
            return
        if not self.approximate and len(self) + len(x) > self.config.exact_max:
            self._switch_to_ivf(x, i)
            return
        self._index.add_with_ids(x, i)

    def remove(self, ids: np.ndarray) -> int:
        i = _as_ids(ids)
        if len(i) == 0:
            return 0
        return int(self._index.remove_ids(i))

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The exact index's vectors and ids (only meaningful before the switch)."""
        flat = faiss.downcast_index(self._index.index)
        vecs = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * self.dim).reshape(flat.ntotal, self.dim).copy()
        return vecs, faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _switch_to_ivf(self, new_vectors: np.ndarray, new_ids: np.ndarray) -> None:
        old_vecs, old_ids = self._stored_vectors()
        vecs = np.concatenate([old_vecs, new_vectors]) if len(old_vecs) else new_vectors
        ids = np.concatenate([old_ids, new_ids]) if len(old_ids) else new_ids
        # FAISS warns below 39 training points per list; cap nlist so k-means is well posed.
        nlist = max(1, min(self.config.nlist, len(vecs) // 39))
        index = faiss.index_factory(self.dim, f"IVF{nlist},{self.config.quantizer}", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = vecs if len(vecs) <= 256 * nlist else vecs[rng.choice(len(vecs), 256 * nlist, replace=False)]
        index.train(np.ascontiguousarray(train))
        index.add_with_ids(vecs, ids)
        faiss.extract_index_ivf(index).nprobe = min(self.config.nprobe, nlist)
        self._index = index

    # --- queries --------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim, "queries")
        if k < 1:
            raise ConfigError(f"top-k must be >= 1, got {k}")
        if len(self) == 0 or len(q) == 0:
            return np.full((len(q), k), -np.inf, dtype=np.float32), np.full((len(q), k), -1, dtype=np.int64)
        scores, ids = self._index.search(q, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    # --- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """One zip file: the serialized index and a JSON header with its sha256, written atomically."""
        blob = memoryview(faiss.serialize_index(self._index))  # no copy: a 1M-view index is over 1 GB
        header = {
            "format": "focuskit-vector-index",
            "version": INDEX_FORMAT_VERSION,
            "dim": self.dim,
            "count": len(self),
            "approximate": self.approximate,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "meta": meta or {},
        }
        with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("header.json", json.dumps(header))
            zf.writestr("index.faiss", blob)

    @classmethod
    def load(
        cls, path: str | Path, config: IndexConfig | None = None, *, source: VectorSource | None = None
    ) -> tuple[FaissIndex, dict[str, Any]]:
        """Read an index written by `save`; returns it and the stored `meta`. Corruption raises MemoryStoreError."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as zf:
                header = json.loads(zf.read("header.json"))
                blob = zf.read("index.faiss")
        except FileNotFoundError:
            raise MemoryStoreError(f"vector index not found: {path}") from None
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError, EOFError) as exc:
            raise MemoryStoreError(f"vector index {path} is corrupt ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != "focuskit-vector-index":
            raise MemoryStoreError(f"{path} is not a focuskit vector index")
        version = header.get("version")
        if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
            raise MemoryStoreError(
                f"vector index {path} has format version {version!r}; this focuskit reads up to "
                f"{INDEX_FORMAT_VERSION}: upgrade focuskit"
            )
        if hashlib.sha256(blob).hexdigest() != header.get("sha256"):
            raise MemoryStoreError(f"vector index {path} is corrupt (checksum mismatch)")
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError as exc:
            raise MemoryStoreError(f"vector index {path} is corrupt ({exc})") from None
        out = cls(int(header["dim"]), config, source=source)
        if int(index.d) != out.dim or int(index.ntotal) != int(header.get("count", -1)):
            raise MemoryStoreError(f"vector index {path} is corrupt (header does not match the index)")
        out._index = index
        if out.approximate:
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = min(out.config.nprobe, ivf.nlist)
        return out, dict(header.get("meta") or {})


__all__ = ["FaissIndex", "IndexConfig", "VectorIndex"]
