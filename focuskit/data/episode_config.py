"""How episodes are built (`EpisodeConfig`) and which sequences or concepts a seeded train/val/test partition
keeps (`partition_infos`): the settings side of `focuskit.data.episode_builder`, light enough for the CLI to check
a config before any dataset is read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from focuskit.core.errors import ConfigError, DatasetError
from focuskit.data.sequences import SequenceInfo

Partition = Literal["none", "random", "category"]
Part = Literal["train", "val", "test"]
PARTS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, tuple[float, float, float]] = {
    "random": (0.8, 0.1, 0.1),
    "category": (0.5, 0.0, 0.5),  # LaSOT's unseen-category protocol: half the classes train, half test
}


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are built. Filled from a YAML file (`load_config`) and/or command-line flags."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Support counts; one set of episodes per k."""
    negatives: int = 0
    """Negative episodes to add per k (supports of one sequence, query image of another, `query_box=None`)."""
    seed: int = 0
    partition: Partition = "none"
    """'random' splits sequences, 'category' splits their categories (so test categories are unseen in train)."""
    part: Part = "test"
    """Which part of the partition to build episodes from."""
    fractions: list[float] | None = None
    """train, val, test fractions of the partition; default 0.8,0.1,0.1 (random) or 0.5,0,0.5 (category)."""
    limit: int | None = None
    """Use only the first N sequences/concepts (after partitioning), for quick looks at big datasets."""
    check_images: bool = True
    """Read the header of every chosen frame: unreadable images and boxes outside the frame become unusable."""
    min_box_fraction: float = 0.0
    """Frames whose target box covers less than this fraction of the image are unusable (0 = keep all)."""
    query_gap: int = 0
    """Frames right before the query that may not be supports (0 = the paper's rule: any earlier usable frame)."""

    def __post_init__(self) -> None:
        if not self.shots or any(k < 1 for k in self.shots):
            raise ConfigError(f"shots must be integers >= 1, got {self.shots}")
        object.__setattr__(self, "shots", sorted(set(self.shots)))
        if self.negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {self.negatives}")
        if self.partition not in ("none", "random", "category"):
            raise ConfigError(f"partition must be none, random or category, got {self.partition!r}")
        if self.part not in PARTS:
            raise ConfigError(f"part must be one of {', '.join(PARTS)}, got {self.part!r}")
        if self.fractions is not None:
            if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
                raise ConfigError(f"fractions must be three numbers >= 0 (train,val,test), got {self.fractions}")
            if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6):
                raise ConfigError(f"fractions must sum to 1, got {self.fractions} (sum {sum(self.fractions):.3f})")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if not 0.0 <= self.min_box_fraction < 1.0:
            raise ConfigError(f"min_box_fraction must be in [0, 1), got {self.min_box_fraction}")
        if self.query_gap < 0:
            raise ConfigError(f"query_gap must be >= 0, got {self.query_gap}")

    def split_fractions(self) -> tuple[float, float, float]:
        if self.fractions is not None:
            return (self.fractions[0], self.fractions[1], self.fractions[2])
        return DEFAULT_FRACTIONS.get(self.partition, (0.0, 0.0, 1.0))


def partition_infos(infos: Sequence[SequenceInfo], config: EpisodeConfig) -> list[SequenceInfo]:
    """The sequences (or concepts) in `config.part` of a seeded train/val/test partition, in the input order.

    'random' assigns sequences; 'category' assigns whole categories, so no category of the test part appears in
    train (the LaSOT unseen-category protocol). Every sequence needs a category for the latter.
    """
    if config.partition == "none":
        return list(infos)
    if config.partition == "category":
        missing = [i.name for i in infos if not i.category]
        if missing:
            raise DatasetError(
                f"--partition category needs a category for every sequence; {len(missing)} have none "
                f"(e.g. {missing[0]!r}); use --partition random"
            )
        keys = sorted({str(i.category) for i in infos})
    else:
        keys = sorted(i.name for i in infos)
    f_train, f_val, _ = config.split_fractions()
    order = [keys[j] for j in np.random.default_rng(config.seed).permutation(len(keys))]
    n_train = min(len(keys), round(f_train * len(keys)))
    n_val = min(len(keys) - n_train, round(f_val * len(keys)))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(keys))}
    lo, hi = bounds[config.part]
    chosen = set(order[lo:hi])
    key_of = (lambda i: str(i.category)) if config.partition == "category" else (lambda i: i.name)
    return [i for i in infos if key_of(i) in chosen]
