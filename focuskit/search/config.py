"""`IndexConfig`: how a vector index is built (a light module: no FAISS, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from focuskit.core.errors import ConfigError


@dataclass(frozen=True)
class IndexConfig:
    """How the FAISS index is built. Defaults suit 1 to 1M views of a few hundred to a few thousand dims."""

    exact_max: int = 50_000
    """Switch from exact to approximate search when the index grows past this many vectors."""
    nlist: int = 1024
    """Inverted lists of the approximate index (capped so every list gets >= 39 training points)."""
    nprobe: int = 32
    """Lists visited per query in the approximate regime: higher is slower and closer to exact."""
    quantizer: str = "SQ8"
    """Vector codec past the threshold: 'SQ8' (4x smaller), 'Flat' (exact scores, full size) or 'PQ<m>'."""

    def __post_init__(self) -> None:
        if self.exact_max < 1:
            raise ConfigError(f"index.exact_max must be >= 1, got {self.exact_max}")
        if self.nlist < 1 or self.nprobe < 1:
            raise ConfigError(f"index.nlist and index.nprobe must be >= 1, got {self.nlist} and {self.nprobe}")
        if not (self.quantizer in ("SQ8", "Flat", "SQfp16") or self.quantizer.startswith("PQ")):
            raise ConfigError(f"index.quantizer must be SQ8, SQfp16, Flat or PQ<m>, got {self.quantizer!r}")
