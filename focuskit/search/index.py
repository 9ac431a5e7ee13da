"""Vector search for the concept memory and the photo library: the `VectorIndex` protocol and its FAISS implementation.

Why FAISS (+ SQLite for metadata) rather than LanceDB or hnswlib: FAISS is already a dependency, is the reference
implementation of exact, IVF and product-quantized search with PCA/OPQ transforms, serializes an index into one byte
buffer we can write atomically and checksum, and supports removal by id in the compressed regime (HNSW graphs in
FAISS and hnswlib do not remove, only mark). LanceDB would add a new dependency (and Arrow) and versioned table files
whose crash behaviour we would have to reason about, for features a personal memory does not need.

Two regimes, switched automatically:
* below `exact_max` vectors, an exact inner-product index (`IndexFlatIP` behind an id map): at 50k vectors of 1376
  dims a query is a 69M multiply-add scan, a few milliseconds, and results are exact;
* past it, a compressed index `PCA{reduce_dim},IVF{nlist},PQ{m}x4fs` (L2 on unit vectors ranks as cosine), trained
  once on a sample of the vectors present at the switch: a 1376-dim float32 vector (5.5 kB) becomes 32 bytes of 4-bit
  codes scanned with SIMD lookups ("fast scan", ~6x faster than 8-bit PQ64 at equal recall in the top 64 on 200k
  vectors), so a million vectors take ~45 MB on disk and in RAM, and a query scans `nprobe` of `nlist` lists. The best
  `max(k, rerank)` candidates are then re-scored with the *exact* vectors, fetched by id from the store's source of
  truth (the memory's SQLite table, the library's float16 shards), so returned scores are exact cosines and the codes
  only have to get the right answer into the candidate list. An index without a `source` keeps its own float32 copy
  for re-ranking (no compression; for tools and tests). Ids are preserved; removal works in both regimes.

Vectors are expected L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import io
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


class _OwnVectors:
    """Exact vectors kept by an index that has no external source: sorted ids and their rows."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(ids)
        self.ids, self.vectors = ids[order], np.ascontiguousarray(vectors[order], dtype=np.float32)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.__init__(np.concatenate([self.vectors, vectors]), np.concatenate([self.ids, ids]))  # type: ignore[misc]

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.vectors = self.ids[keep], self.vectors[keep]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(self.ids, ids), 0, max(0, len(self.ids) - 1))
        if len(ids) and (len(self.ids) == 0 or not (self.ids[pos] == ids).all()):
            raise MemoryStoreError("vector index: re-ranking asked for ids it does not hold")
        return self.vectors[pos]


def _codec(config: IndexConfig, dim: int, n_train: int) -> tuple[str, int]:
    """The FAISS factory string of the compressed regime and the dims after reduction."""
    reduced = config.reduce_dim if 0 < config.reduce_dim < dim else dim
    reduced = min(reduced, max(1, n_train))  # PCA cannot find more directions than training points
    pre = f"PCA{reduced}," if reduced < dim else ""
    nlist = max(1, min(config.nlist, n_train // 39))  # FAISS warns below 39 training points per list
    codec = config.quantizer
    if codec.startswith("PQ"):
        if n_train < 1024:  # 8-bit PQ trains 256 centroids per sub-vector: too few points, use SQ8
            codec = "SQ8"
        else:
            fast = codec.endswith("x4fs")
            m = min(int(codec[2:].removesuffix("x4fs")), reduced)
            while reduced % m or (fast and m % 2 and m > 1):  # fast-scan packs sub-quantizers in pairs
                m -= 1
            codec = f"PQ{m}x4fs" if fast and m % 2 == 0 else f"PQ{m}"
    return f"{pre}IVF{nlist},{codec}", reduced


class FaissIndex:
    """`VectorIndex` over FAISS: exact below `config.exact_max` vectors, IVF past it (see the module doc)."""

    def __init__(self, dim: int, config: IndexConfig | None = None, *, source: VectorSource | None = None) -> None:
        if dim < 1:
            raise ConfigError(f"index dimension must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or IndexConfig()
        self.source = source
        """Exact vectors by id, for re-ranking compressed-code candidates (the store's source of truth)."""
        self._own: _OwnVectors | None = None
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
        if self._own is not None:
            self._own.add(x, i)

    def remove(self, ids: np.ndarray) -> int:
        i = _as_ids(ids)
        if len(i) == 0:
            return 0
        if self._own is not None:
            self._own.remove(i)
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
        rng = np.random.default_rng(0)
        n_train = min(len(vecs), self.config.train_size)
        train = vecs if n_train == len(vecs) else vecs[np.sort(rng.choice(len(vecs), n_train, replace=False))]
        factory, _ = _codec(self.config, self.dim, n_train)
        # L2 on unit vectors ranks exactly as inner product, and unlike inner product survives PCA's centering.
        index = faiss.index_factory(self.dim, factory, faiss.METRIC_L2)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # extract_ returns the IndexIVF base class
        ivf.cp.niter = self.config.train_iters
        if isinstance(ivf, faiss.IndexIVFPQ):
            # Codes of the vectors themselves, not of their residuals to the list centroid: one distance table per
            # query instead of one per (query, list), 5-10x less work at nprobe 32; the exact re-ranking recovers
            # the precision lost. (Until issue 11's second pass this was set on the undowncast base object, so it
            # never took effect.)
            ivf.by_residual = False
            ivf.pq.cp.niter = self.config.train_iters
            # Polysemous training (FAISS's default for IVFPQ) orders the codes for Hamming filtering, which we do
            # not use; it took ~200 of the ~215 s of training on 50k x 960 vectors.
            ivf.do_polysemous_training = False
        index.train(np.ascontiguousarray(train))
        index.add_with_ids(vecs, ids)
        self._index = index
        self._set_nprobe()
        if self.source is None and self.config.rerank > 0:
            self._own = _OwnVectors(vecs, ids)

    def _set_nprobe(self) -> None:
        ivf = faiss.extract_index_ivf(self._index)
        ivf.nprobe = min(self.config.nprobe, ivf.nlist)

    # --- queries --------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_vectors(queries, self.dim, "queries")
        if k < 1:
            raise ConfigError(f"top-k must be >= 1, got {k}")
        if len(self) == 0 or len(q) == 0:
            return np.full((len(q), k), -np.inf, dtype=np.float32), np.full((len(q), k), -1, dtype=np.int64)
        if not self.approximate:
            scores, ids = self._index.search(q, k)
            return np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids.astype(np.int64)
        source = self.source or self._own
        rerank = self.config.rerank > 0 and source is not None
        wide = min(len(self), max(k, self.config.rerank)) if rerank else k
        dist, ids = self._index.search(q, max(k, wide))
        ids = ids.astype(np.int64)
        if not rerank:  # L2 on unit vectors: |q - x|^2 = 2 - 2 cos
            scores = 1.0 - dist / 2.0 if self._index.metric_type == faiss.METRIC_L2 else dist
        else:
            assert source is not None
            scores = self._exact_scores(q, ids, source)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, np.where(np.isfinite(scores), ids, -1)

    def _exact_scores(self, q: np.ndarray, ids: np.ndarray, source: VectorSource) -> np.ndarray:
        """(Q, K) exact cosines of each query with its candidates (-inf for empty slots)."""
        valid = ids >= 0
        uniq, inverse = np.unique(ids[valid], return_inverse=True)
        vectors = np.asarray(source(uniq), dtype=np.float32).reshape(len(uniq), self.dim)
        slot = np.zeros(ids.shape, dtype=np.int64)
        slot[valid] = inverse.reshape(-1)
        out = np.empty(ids.shape, dtype=np.float32)
        for lo in range(0, len(q), 16):  # (16, K, dim) gathered rows at a time: bounded memory
            rows = vectors[slot[lo : lo + 16]]
            out[lo : lo + 16] = np.einsum("qd,qkd->qk", q[lo : lo + 16], rows)
        return np.where(valid, out, -np.inf)

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
        own = b""
        if self._own is not None:  # the re-ranking copy of an index without a source
            buf = io.BytesIO()
            np.savez(buf, ids=self._own.ids, vectors=self._own.vectors)
            own = buf.getvalue()
            header["own_sha256"] = hashlib.sha256(own).hexdigest()
        with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("header.json", json.dumps(header))
            zf.writestr("index.faiss", blob)
            if own:
                zf.writestr("own.npz", own)

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
                own = zf.read("own.npz") if isinstance(header, dict) and header.get("own_sha256") else b""
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
        if own:
            if hashlib.sha256(own).hexdigest() != header.get("own_sha256"):
                raise MemoryStoreError(f"vector index {path} is corrupt (checksum mismatch)")
            with np.load(io.BytesIO(own), allow_pickle=False) as arrays:
                out._own = _OwnVectors(arrays["vectors"], arrays["ids"])
        if out.approximate:
            out._set_nprobe()
        return out, dict(header.get("meta") or {})


__all__ = ["INDEX_FORMAT_VERSION", "FaissIndex", "IndexConfig", "VectorIndex", "VectorSource"]
