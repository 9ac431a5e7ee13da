"""What the library index stores, as dataclasses passed between the embedding step, the store and search.

A light module (numpy only): a cluster job that runs the embedding step (`focuskit.library.embedding`) produces
`FileRecord`s, and the store turns them into shard rows and SQLite rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemLocations:
    """Where every stored item's embeddings sit, as aligned arrays (one row per item, sorted by item id)."""

    item_ids: np.ndarray
    """(N,) int64."""
    shard: np.ndarray
    """(N,) int64 positions in `shards`."""
    start: np.ndarray
    count: np.ndarray
    root: np.ndarray
    """(N,) int64 positions in `roots`."""
    shards: list[str]
    roots: list[str]


@dataclass(frozen=True)
class StoredFile:
    id: int
    root: str
    path: str
    kind: str
    size: int
    mtime_ns: int
    sha1: str | None
    status: str
    error: str | None


@dataclass(frozen=True)
class ItemRecord:
    """What an indexing batch produced for one photo or video frame, before it gets row numbers in a shard."""

    frame: int | None
    time_s: float | None
    width: int
    height: int
    boxes: np.ndarray
    """(N, 4) float32 xyxy pixels of the proposals."""
    embeddings: np.ndarray
    """(N, dim) L2-normalised embeddings, one per proposal."""


@dataclass(frozen=True)
class FileRecord:
    """One file's outcome in a batch: its items, or the reason it could not be indexed."""

    root: str
    path: str
    kind: str
    size: int
    mtime_ns: int
    sha1: str | None
    items: tuple[ItemRecord, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ItemRow:
    """A stored item: where its embeddings sit in which shard, and its proposal boxes."""

    id: int
    file_id: int
    root: str
    path: str
    kind: str
    frame: int | None
    time_s: float | None
    width: int
    height: int
    shard: str
    start: int
    count: int
    boxes: np.ndarray
