"""`IndexConfig`: how a vector index is built (a light module: no FAISS, no torch)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from focuskit.core.errors import ConfigError


@dataclass(frozen=True)
class IndexConfig:
    """How the FAISS index is built. Defaults suit 1 to 1M+ vectors of a few hundred to a few thousand dims.

    Below `exact_max` vectors the index is exact. Past it, vectors are rotated by PCA to `reduce_dim` dims, sorted
    into `nlist` inverted lists and stored as `quantizer` codes (PQ64x4fs: 32 bytes a vector); a query scans `nprobe`
    lists and re-scores its best max(k, `rerank`) candidates with the exact vectors (see `focuskit.search.index`).
    """

    exact_max: int = 50_000
    """Switch from exact to approximate search when the index grows past this many vectors."""
    nlist: int = 1024
    """Inverted lists of the approximate index (capped so every list gets >= 39 training points)."""
    nprobe: int = 32
    """Lists visited per query in the approximate regime: higher is slower and closer to exact."""
    quantizer: str = "PQ64x4fs"
    """Vector codec past the threshold: 'PQ<m>x4fs' (m 4-bit codes, m/2 bytes a vector, scanned with SIMD lookups:
    the default, ~6x faster to scan than 'PQ<m>'), 'PQ<m>' (m bytes; m divides the reduced dims), 'SQ8' (1 byte a
    dimension), 'SQfp16' or 'Flat' (exact scores, full size)."""
    reduce_dim: int = 256
    """PCA output dims before the codec (0: no reduction; ignored when >= the vectors' dims)."""
    train_size: int = 50_000
    """Vectors (a seeded sample of those present at the switch) the PCA, inverted lists and codes are trained on."""
    train_iters: int = 10
    """k-means iterations for the inverted lists and the PQ codebooks (FAISS defaults to 25). Training is a one-off
    cost at the switch; with exact re-ranking the index only has to get the right answer into the candidates, which
    coarser centroids still do (benchmarks/memory_scale.py and library_scale.py measure recall against exact)."""
    rerank: int = 64
    """Candidates per query re-scored with the exact vectors (k if k is larger); 0 returns the codes' approximate
    scores."""

    def __post_init__(self) -> None:
        if self.exact_max < 1:
            raise ConfigError(f"index.exact_max must be >= 1, got {self.exact_max}")
        if self.nlist < 1 or self.nprobe < 1:
            raise ConfigError(f"index.nlist and index.nprobe must be >= 1, got {self.nlist} and {self.nprobe}")
        if not (self.quantizer in ("SQ8", "Flat", "SQfp16") or re.fullmatch(r"PQ[1-9][0-9]*(x4fs)?", self.quantizer)):
            raise ConfigError(f"index.quantizer must be PQ<m>, PQ<m>x4fs, SQ8, SQfp16 or Flat, got {self.quantizer!r}")
        if self.train_size < 1 or self.train_iters < 1:
            raise ConfigError(
                f"index.train_size and index.train_iters must be >= 1, got {self.train_size}, {self.train_iters}"
            )
        if self.reduce_dim < 0 or self.rerank < 0:
            raise ConfigError(f"index.reduce_dim and index.rerank must be >= 0, got {self.reduce_dim}, {self.rerank}")
