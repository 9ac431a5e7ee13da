"""`LibraryIndex`: the query-side features of a photo library, computed once, searched for any concept.

Finding "my bike" in 10,000 photos with the detector means running a proposal network and an encoder on every
photo, about 0.1 s each: 20 minutes per question. But those features do not depend on the concept. So the index
computes, once per photo (and per sampled video frame), class-agnostic proposals and their region embeddings
(`embedding.py`, optionally in a process pool), stores them (`store.py`), and a search asks the library's vector
index (`vectors.py`: exact while small, compressed with exact re-ranking past it) for the proposals nearest to the
concept's reference views (`hits.py`): milliseconds for any concept added later, sub-linear in the library's size.

Indexing is incremental (only new or changed files are computed, deleted files are dropped), shows a progress bar,
and commits every batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from focuskit.core.errors import ConfigError, DatasetError, MemoryStoreError
from focuskit.library.config import DEFAULT_TAU, LibraryConfig
from focuskit.library.embedding import EmbeddingPool, FileTask, embed_files, embed_image, read_batch_file
from focuskit.library.hits import Found, query_items, scan_items, stored_dim, to_hit
from focuskit.library.media import scan_media
from focuskit.library.records import FileRecord, ItemRecord, ItemRow
from focuskit.library.results import Hit, IndexReport
from focuskit.library.scoring import ConceptViews, concept_view_embeddings, file_sha1
from focuskit.library.store import LibraryStore
from focuskit.library.vectors import LibraryVectors
from focuskit.matcher.config import MatcherConfig


class _Proposer(Protocol):
    def propose(self, image: Image.Image) -> np.ndarray: ...


ProgressCallback = Callable[[int, int], None]
"""Called as (files done, files to do) after each file; the server reports indexing progress through it."""


class LibraryIndex:
    """Index photo folders into `state_dir` and search them for concepts of a memory.

    `encoder` may be given built, or as a zero-argument factory (the CLI passes the memory's), and `proposers`
    built; otherwise both are created from `config` on first use. Searching never builds either.
    """

    def __init__(
        self,
        state_dir: str | Path,
        config: LibraryConfig | None = None,
        *,
        encoder: Any | None = None,
        proposers: Sequence[_Proposer] | None = None,
    ) -> None:
        self.config = config or LibraryConfig()
        self.store = LibraryStore(state_dir)
        self.vectors = LibraryVectors(self.store, self.config.index)
        self._encoder = encoder
        self._proposers = list(proposers) if proposers is not None else None
        self._matcher: Any | None = None

    @property
    def state_dir(self) -> Path:
        return self.store.state_dir

    def matcher_config(self) -> MatcherConfig:
        """The shared matcher's part of this library's options."""
        return self.config.matcher_config()

    @property
    def matcher(self) -> Any:
        """The shared `RegionMatcher` (built on first use: searching needs neither model)."""
        if self._matcher is None:
            from focuskit.matcher import RegionMatcher

            self._matcher = RegionMatcher(self.matcher_config(), encoder=self._encoder, proposers=self._proposers)
        return self._matcher

    @property
    def encoder(self) -> Any:
        return self.matcher.encoder

    @property
    def proposers(self) -> list[_Proposer]:
        return self.matcher.proposers

    @property
    def encoder_tag(self) -> str | None:
        """The encoder the stored embeddings were made with (None for an empty index)."""
        return self.store.get_meta("encoder")

    # --- indexing -----------------------------------------------------------------------------------------
    def update(
        self,
        root: str | Path,
        *,
        reindex: bool = False,
        progress: bool = True,
        exclude: Sequence[Path] = (),
        on_progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Bring the index of `root` up to date: compute new and changed files, drop deleted ones.

        `reindex` recomputes everything (needed after changing the encoder). Raises `DatasetError` when `root` is not
        a folder, `MemoryStoreError` when the index was built with another encoder and `reindex` is not set.
        """
        start_time = time.perf_counter()
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise DatasetError(f"library folder not found or not a folder: {root_path}")
        root_path = root_path.resolve()
        report = IndexReport(root_path)
        with self.store.exclusive():
            tag = self.encoder.name
            self._claim_encoder(tag, reindex)
            key = str(root_path)
            scanned = scan_media(root_path, exclude=[self.state_dir, *exclude])
            stored = self.store.files(key)
            present = {m.path for m in scanned}
            gone = [f.id for (_, path), f in stored.items() if path not in present]
            self.store.remove_files(gone)
            report.removed = len(gone)

            todo: list[tuple[FileTask, bool]] = []
            for media in scanned:
                old = stored.get((key, media.path))
                if old is not None and (old.size, old.mtime_ns, old.kind) == (media.size, media.mtime_ns, media.kind):
                    report.unchanged += 1
                    continue
                digest = file_sha1(root_path / media.path) if self.config.check == "hash" else None
                if old is not None and digest is not None and digest == old.sha1:
                    self.store.touch_file(old.id, media.size, media.mtime_ns)
                    report.unchanged += 1
                    continue
                todo.append((FileTask(key, media, digest), old is not None))

            existed = {t.media.path: e for t, e in todo}
            bar = tqdm(total=len(todo), desc="indexing", unit="file", disable=not progress)
            try:
                for records in self._embed_batches([t for t, _ in todo], tag):
                    for rec in records:
                        if rec.error:
                            report.failed.append((rec.path, rec.error))
                        elif existed[rec.path]:
                            report.updated += 1
                        else:
                            report.added += 1
                        report.items += len(rec.items)
                    self.store.write_batch(records)
                    bar.update(len(records))
                    if on_progress is not None:
                        on_progress(bar.n, len(todo))
            finally:
                bar.close()
            self.store.collect_garbage()
            self._save_vectors()
        report.seconds = time.perf_counter() - start_time
        return report

    def _claim_encoder(self, tag: str, reindex: bool) -> None:
        """Refuse to mix encoders; `reindex` forgets everything stored first. Call under the lock."""
        stored_tag = self.encoder_tag
        if reindex or (stored_tag is not None and stored_tag != tag):
            if not reindex:
                raise MemoryStoreError(
                    f"library index {self.state_dir} was built with encoder {stored_tag!r}, not {tag!r}; "
                    "re-index it with --reindex (every photo is computed again)"
                )
            self.store.clear()
            self.vectors.forget()
        self.store.set_meta("encoder", tag)

    def _embed_batches(self, tasks: list[FileTask], tag: str) -> Iterator[list[FileRecord]]:
        """Records of `tasks`, one committed batch at a time: in this process, or in `config.workers` processes."""
        size = self.config.batch_size
        batches = (tasks[lo : lo + size] for lo in range(0, len(tasks), size))
        if self.config.workers == 1 or len(tasks) <= size:
            for batch in batches:
                yield embed_files(batch, self.config, self.matcher)
            return
        from focuskit.library.embedding import encoder_tag

        if encoder_tag(self.config) != tag:
            raise ConfigError(
                f"workers build the encoder from the library config ({encoder_tag(self.config)!r}), but this index "
                f"uses {tag!r}; set the config's encoder options to the memory's, or use workers: 1"
            )
        with EmbeddingPool(self.config, self.config.workers) as pool:
            yield from pool.map(batches)

    def _save_vectors(self) -> None:
        """Sync the vector index with what was committed and write it for the next process (under the lock)."""
        dim = self._stored_dim()
        if dim is not None:
            self.vectors.sync_and_save(dim)

    def _stored_dim(self) -> int | None:
        return stored_dim(self.store, self.vectors)

    def ingest(self, batch_files: Sequence[str | Path], *, reindex: bool = False) -> IndexReport:
        """Commit batch files written by `embedding.write_batch_file` (a cluster job's output), as `update` would
        have committed the same records. Files already stored under the same root and path are replaced."""
        start_time = time.perf_counter()
        report = IndexReport(Path("."))
        with self.store.exclusive():
            loaded = [read_batch_file(p) for p in batch_files]
            tags = {tag for _, tag in loaded}
            if len(tags) > 1:
                raise MemoryStoreError(f"batch files were made with different encoders: {', '.join(sorted(tags))}")
            for records, tag in loaded:
                self._claim_encoder(tag, reindex)
                reindex = False
                roots = {r.root for r in records}
                if len(roots) == 1:
                    report.root = Path(next(iter(roots)))
                self.store.write_batch(records)
                for rec in records:
                    if rec.error:
                        report.failed.append((rec.path, rec.error))
                    else:
                        report.added += 1
                    report.items += len(rec.items)
            self.store.collect_garbage()
            self._save_vectors()
        report.seconds = time.perf_counter() - start_time
        return report

    def features(self, image: Image.Image, *, frame: int | None = None, time_s: float | None = None) -> ItemRecord:
        """The shared matcher's proposals (whole image, detector boxes, windows) and their embeddings for one image."""
        return embed_image(self.matcher, image, frame=frame, time_s=time_s)

    def propose(self, image: Image.Image) -> np.ndarray:
        """(N, 4) boxes, N <= max_proposals (`RegionMatcher.propose`)."""
        return self.matcher.propose(image)

    # --- search -------------------------------------------------------------------------------------------
    def search(
        self,
        concept_name: str,
        memory: ConceptViews | Any,
        tau: float | None = None,
        top: int | None = None,
        *,
        root: str | Path | None = None,
        path: str | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Photos and frames where `concept_name` is found, best first, from the stored features only.

        A proposal's score is its best cosine over the concept's views; a photo is a hit when a proposal reaches
        `tau` (default `config.tau`), and its boxes are the proposals above `tau` after NMS. `root` limits the
        search to one indexed folder, `path` (relative to it) to one file.

        The vector index answers (`vectors.py`); while it is exact every hit is found, past `index.exact_max`
        vectors the photos among each view's `config.candidates` nearest proposals are (scores stay exact).
        `exact=True`, and a `path` filter, scan the stored rows instead (the reference the benchmark checks).
        """
        views, view_tag = concept_view_embeddings(memory, concept_name)
        tag = self.encoder_tag
        if tag is not None and view_tag != tag:
            raise MemoryStoreError(
                f"concept {concept_name!r} was embedded with encoder {view_tag!r} but the library index with "
                f"{tag!r}; re-index the library with that encoder (or re-embed the memory)"
            )
        tau = self.config.tau if tau is None else float(tau)
        if top is not None and top < 1:
            raise ConfigError(f"top must be >= 1, got {top}")
        key = None if root is None else str(Path(root).resolve())
        scan = exact or path is not None

        def find() -> list[Found]:
            if scan:
                return scan_items(self.store, self.vectors, views, tau, key, path)
            return query_items(self.store, self.vectors, views, tau, key, top, candidates=self.config.candidates)

        try:
            found = find()
        except MemoryStoreError as exc:
            if "dims" in str(exc):
                raise
            # A shard can vanish under a search when a concurrent indexing run compacts it; the items read
            # again point at the new shard.
            found = find()
        found.sort(key=lambda c: (-c[0], c[1].path, c[1].frame or 0))
        # Boxes and `Hit`s only for what is returned: a common concept can match thousands of photos.
        cfg = self.config
        return [
            to_hit(row, scores, tau, max_boxes=cfg.max_boxes_per_image, nms_iou=cfg.nms_iou)
            for _, row, scores in (found if top is None else found[:top])
        ]

    # --- inspection ---------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "encoder": self.encoder_tag,
            "roots": self.store.roots(),
            **self.store.counts(),
        }

    def items(self, root: str | Path | None = None) -> list[ItemRow]:
        """Every indexed photo and video frame (optionally under one root), for browsing."""
        return self.store.items(root=None if root is None else str(Path(root).resolve()))


__all__ = [
    "DEFAULT_TAU",
    "ConceptViews",
    "Hit",
    "IndexReport",
    "LibraryConfig",
    "LibraryIndex",
    "concept_view_embeddings",
]
