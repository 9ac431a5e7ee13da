"""The embedding step of library indexing: a pure function over file batches, a process pool, and batch files.

`embed_files(tasks, config)` reads each file, runs the shared matcher's proposals and region embeddings, and
returns one `FileRecord` per file; it touches no state directory and depends only on its arguments (the models are
built from `config` once per process), so it can run anywhere:

* in the indexing process (`LibraryConfig.workers == 1`);
* in a local process pool (`EmbeddingPool`, workers > 1): the parent keeps the only SQLite writer and commits each
  batch as it comes back, with at most 2 batches per worker in flight, so memory is bounded by the batch size;
* on a cluster (Ray Data, Spark): each task embeds its share of the files and writes a batch file
  (`write_batch_file`); `LibraryIndex.ingest` commits batch files into a state directory exactly as indexing
  would (docs/scale.md).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.errors import ConfigError, ImageError, MemoryStoreError
from focuskit.core.image import load_image
from focuskit.core.io import atomic_open
from focuskit.library.config import LibraryConfig
from focuskit.library.media import MediaFile, sample_frames
from focuskit.library.records import FileRecord, ItemRecord

BATCH_FORMAT = "focuskit-library-batch"
BATCH_VERSION = 1


@dataclass(frozen=True)
class FileTask:
    """One file to embed: its library root (absolute), its stat, and its content hash when `check == 'hash'`."""

    root: str
    media: MediaFile
    sha1: str | None = None


_MATCHERS: dict[str, Any] = {}
"""Per-process cache of built matchers, keyed by their config (a worker builds its models once, not per batch)."""


def matcher_for(config: LibraryConfig) -> Any:
    """The shared `RegionMatcher` of `config`, built once per process."""
    key = repr(config.matcher_config())
    if key not in _MATCHERS:
        from focuskit.matcher import RegionMatcher

        _MATCHERS[key] = RegionMatcher(config.matcher_config())
    return _MATCHERS[key]


def embed_image(matcher: Any, image: Any, *, frame: int | None = None, time_s: float | None = None) -> ItemRecord:
    """The matcher's proposals (whole image, detector boxes, windows) and their embeddings for one image."""
    boxes, emb = matcher.regions(image)
    return ItemRecord(frame, time_s, image.width, image.height, boxes.astype(np.float32), emb)


def embed_file(task: FileTask, config: LibraryConfig, matcher: Any) -> FileRecord:
    """Features of one file; an unreadable file becomes a record with its error instead of stopping the run."""
    media = task.media
    base = dict(root=task.root, path=media.path, kind=media.kind, size=media.size, mtime_ns=media.mtime_ns)
    path = Path(task.root) / media.path
    try:
        if media.kind == "image":
            items = [embed_image(matcher, load_image(path, max_pixels=config.max_pixels))]
        else:
            frames = sample_frames(path, every_s=config.video_every_s, max_frames=config.max_frames_per_video)
            items = [embed_image(matcher, f.image, frame=f.index, time_s=f.time_s) for f in frames]
    except ImageError as exc:
        return FileRecord(**base, sha1=task.sha1, error=str(exc))
    return FileRecord(**base, sha1=task.sha1, items=tuple(items))


def embed_files(tasks: Sequence[FileTask], config: LibraryConfig, matcher: Any | None = None) -> list[FileRecord]:
    """One `FileRecord` per task, in order: the pure embedding step (same files + config -> same records)."""
    matcher = matcher if matcher is not None else matcher_for(config)
    return [embed_file(t, config, matcher) for t in tasks]


def tasks_for_part(root: str | Path, part: int, parts: int, *, hash_files: bool = False) -> list[FileTask]:
    """The files of `root` (scanned, sorted by path) whose position is `part` modulo `parts`: a cluster job's or a
    local process's share of a folder."""
    from focuskit.library.media import scan_media
    from focuskit.library.scoring import file_sha1

    if parts < 1 or not 0 <= part < parts:
        raise ConfigError(f"part must be in [0, {parts}) with parts >= 1, got part {part} of {parts}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ConfigError(f"library folder not found or not a folder: {root_path}")
    root_path = root_path.resolve()
    scanned = sorted(scan_media(root_path), key=lambda m: m.path)[part::parts]
    return [FileTask(str(root_path), m, file_sha1(root_path / m.path) if hash_files else None) for m in scanned]


def encoder_tag(config: LibraryConfig) -> str:
    """The tag of the encoder `config` builds (what batch files and the state directory record)."""
    return str(matcher_for(config).tag)


# --- local process pool -----------------------------------------------------------------------------------------
def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    import cv2

    cv2.setNumThreads(threads)


class EmbeddingPool:
    """`embed_files` over batches in `workers` processes, results in submission order, bounded in flight."""

    def __init__(self, config: LibraryConfig, workers: int) -> None:
        if workers < 2:
            raise ConfigError(f"an embedding pool needs >= 2 workers, got {workers}")
        self.config = config
        self.workers = workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn, not fork: the parent may hold torch/OpenMP thread pools that a forked child would inherit broken.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,)
        )

    def map(self, batches: Iterable[Sequence[FileTask]]) -> Iterator[list[FileRecord]]:
        pending: deque[Future[list[FileRecord]]] = deque()
        for batch in batches:
            pending.append(self._pool.submit(embed_files, list(batch), self.config))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EmbeddingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- batch files (the cluster path) -----------------------------------------------------------------------------
def write_batch_file(path: str | Path, records: Sequence[FileRecord], encoder: str) -> None:
    """Write records as one `.npz` batch file (atomically): a JSON header of files and items, then all boxes
    (float32) and embeddings (float16, as the shards store them) concatenated in item order."""
    items = [it for r in records for it in r.items]
    header = {
        "format": BATCH_FORMAT,
        "version": BATCH_VERSION,
        "encoder": encoder,
        "files": [
            {
                **{k: v for k, v in asdict(r).items() if k != "items"},
                "items": [[it.frame, it.time_s, it.width, it.height, len(it.embeddings)] for it in r.items],
            }
            for r in records
        ],
    }
    dim = int(items[0].embeddings.shape[1]) if items else 0
    boxes = np.concatenate([it.boxes for it in items]) if items else np.zeros((0, 4), np.float32)
    emb = np.concatenate([it.embeddings for it in items]) if items else np.zeros((0, dim), np.float16)
    buf = io.BytesIO()
    np.savez(
        buf,
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        boxes=boxes.astype(np.float32),
        embeddings=emb.astype(np.float16),
    )
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())


def read_batch_file(path: str | Path) -> tuple[list[FileRecord], str]:
    """The records of a batch file and the encoder tag they were made with; a bad file raises MemoryStoreError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            boxes, emb = z["boxes"], z["embeddings"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise MemoryStoreError(f"{path} is not a readable library batch file ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != BATCH_FORMAT:
        raise MemoryStoreError(f"{path} is not a focuskit library batch file")
    if header.get("version") != BATCH_VERSION:
        raise MemoryStoreError(f"{path}: batch file version {header.get('version')!r}, this focuskit reads 1")
    records, row = [], 0
    try:
        for f in header["files"]:
            items = []
            for frame, time_s, width, height, n in f["items"]:
                items.append(ItemRecord(frame, time_s, width, height, boxes[row : row + n], emb[row : row + n]))
                row += n
            fields = {k: f[k] for k in ("root", "path", "kind", "size", "mtime_ns", "sha1", "error")}
            records.append(FileRecord(**fields, items=tuple(items)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MemoryStoreError(f"{path}: malformed batch file header ({exc})") from None
    if row != len(emb) or len(boxes) != len(emb):
        raise MemoryStoreError(f"{path}: batch file rows do not match its header ({row} vs {len(emb)})")
    return records, str(header.get("encoder"))


__all__ = [
    "EmbeddingPool",
    "FileTask",
    "embed_file",
    "embed_files",
    "embed_image",
    "encoder_tag",
    "matcher_for",
    "read_batch_file",
    "tasks_for_part",
    "write_batch_file",
]
