"""`LibraryIndex`: the query-side features of a photo library, computed once, searched for any concept.

Finding "my bike" in 10,000 photos with the detector means running a proposal network and an encoder on every
photo, about 0.1 s each: 20 minutes per question. But those features do not depend on the concept. So the index
computes, once per photo (and per sampled video frame), class-agnostic proposals and their region embeddings, stores
them (see `store.py`), and a search is then a matrix product of the stored embeddings with the concept's reference
views: well under a second for 10,000 photos, for any concept added later.

Indexing is incremental (only new or changed files are computed, deleted files are dropped), shows a progress bar,
and commits every batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from focuskit.core.box import Box, nms
from focuskit.core.errors import ConfigError, DatasetError, ImageError, MemoryStoreError
from focuskit.core.image import load_image
from focuskit.library.media import MediaFile, sample_frames, scan_media
from focuskit.library.store import FileRecord, ItemRecord, ItemRow, LibraryStore
from focuskit.matcher.config import DEFAULT_ENCODER_TAG, MatcherConfig, tau_for

DEFAULT_TAU = tau_for(DEFAULT_ENCODER_TAG)
"""The shared matcher's threshold for the memory's default encoder, so a search says "found" where `detect` and
`localize` do. Expect to tune it per library (`--tau`), and per encoder (cosines of DINOv2 features run higher)."""


@dataclass
class LibraryConfig:
    """How a library is indexed and searched. Changing the encoder means re-indexing (embeddings are tagged)."""

    encoder: str = "mobilenetv2"
    """Encoder name for `create_encoder`; must be the one the concept memory embeds its views with."""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    """Options of a built encoder are the memory's (the CLI and server pass its encoder); these apply otherwise."""
    proposers: list[str] = field(default_factory=lambda: list(MatcherConfig().proposers))
    """Proposal sources of the shared matcher (`focuskit.matcher.MatcherConfig`); their boxes are merged."""
    proposer_options: dict[str, dict[str, Any]] = field(default_factory=lambda: MatcherConfig().proposer_options)
    max_proposals: int = 96
    """Boxes kept per photo: the whole photo and an equal share of each proposer's boxes (see `propose`)."""
    batch_size: int = 32
    """Files per committed batch: an interruption loses at most this many files' work."""
    check: Literal["stat", "hash"] = "stat"
    """How a changed file is recognised: size+mtime ('stat'), or also its SHA-1 when the stat changed ('hash',
    which skips files that were only touched or copied back)."""
    video_every_s: float = 2.0
    max_frames_per_video: int = 60
    max_pixels: int = 60_000_000
    tau: float = DEFAULT_TAU
    max_boxes_per_image: int = 1
    """Boxes reported per photo: 1 suits a personal object (there is one Bruno); raise it for repeated objects."""
    nms_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.max_proposals < 1:
            raise ConfigError(f"max_proposals must be >= 1, got {self.max_proposals}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.video_every_s <= 0:
            raise ConfigError(f"video_every_s must be > 0, got {self.video_every_s}")
        if self.max_frames_per_video < 1:
            raise ConfigError(f"max_frames_per_video must be >= 1, got {self.max_frames_per_video}")
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"tau is a cosine similarity in [-1, 1], got {self.tau}")
        if not self.proposers:
            raise ConfigError("proposers must name at least one proposal source, e.g. ['ssd', 'windows']")


@dataclass(frozen=True)
class Hit:
    """A photo (or video frame) where the concept was found: boxes in pixels, best first, with their scores."""

    image: Path
    """Absolute path of the photo or video file."""
    root: Path
    """The library folder it was indexed under; `image` relative to it is `path`."""
    path: str
    frame: int | None
    time_s: float | None
    boxes: tuple[Box, ...]
    scores: tuple[float, ...]
    width: int
    height: int

    @property
    def score(self) -> float:
        return self.scores[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "path": self.path,
            "frame": self.frame,
            "time_s": None if self.time_s is None else round(self.time_s, 3),
            "width": self.width,
            "height": self.height,
            "score": round(self.score, 4),
            "boxes": [b.as_list() for b in self.boxes],
            "scores": [round(s, 4) for s in self.scores],
        }


@dataclass
class IndexReport:
    """What an `update` did. `failed` lists (relative path, reason) for files that could not be read."""

    root: Path
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    items: int = 0
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        return self.added + self.updated

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "items": self.items,
            "seconds": round(self.seconds, 3),
        }


class ConceptViews(Protocol):
    """What search needs from a concept memory: a concept's view embeddings and the encoder that made them."""

    def view_embeddings(self, name: str) -> tuple[np.ndarray, str]: ...


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
        self._encoder = encoder
        self._proposers = list(proposers) if proposers is not None else None
        self._matcher: Any | None = None
        self._shards: dict[str, np.ndarray] = {}
        """Memory-mapped shards kept open between searches (opening one costs ~1 ms); pruned to the live ones."""

    @property
    def state_dir(self) -> Path:
        return self.store.state_dir

    def matcher_config(self) -> MatcherConfig:
        """The shared matcher's part of this library's options."""
        c = self.config
        return MatcherConfig(
            encoder=c.encoder,
            encoder_options=dict(c.encoder_options) or MatcherConfig().encoder_options,
            proposers=list(c.proposers),
            proposer_options={k: dict(v) for k, v in c.proposer_options.items()},
            max_proposals=c.max_proposals,
        )

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
            stored_tag = self.encoder_tag
            if reindex or (stored_tag is not None and stored_tag != tag):
                if not reindex:
                    raise MemoryStoreError(
                        f"library index {self.state_dir} was built with encoder {stored_tag!r}, not {tag!r}; "
                        "re-index it with --reindex (every photo is computed again)"
                    )
                self.store.clear()
            self.store.set_meta("encoder", tag)

            key = str(root_path)
            scanned = scan_media(root_path, exclude=[self.state_dir, *exclude])
            stored = self.store.files(key)
            present = {m.path for m in scanned}
            gone = [f.id for (_, path), f in stored.items() if path not in present]
            self.store.remove_files(gone)
            report.removed = len(gone)

            todo: list[tuple[MediaFile, str | None, bool]] = []
            for media in scanned:
                old = stored.get((key, media.path))
                if old is not None and (old.size, old.mtime_ns, old.kind) == (media.size, media.mtime_ns, media.kind):
                    report.unchanged += 1
                    continue
                digest = _sha1(root_path / media.path) if self.config.check == "hash" else None
                if old is not None and digest is not None and digest == old.sha1:
                    self.store.touch_file(old.id, media.size, media.mtime_ns)
                    report.unchanged += 1
                    continue
                todo.append((media, digest, old is not None))

            bar = tqdm(total=len(todo), desc="indexing", unit="file", disable=not progress)
            try:
                for lo in range(0, len(todo), self.config.batch_size):
                    batch = todo[lo : lo + self.config.batch_size]
                    records = []
                    for media, digest, existed in batch:
                        rec = self._compute(root_path, media, digest)
                        records.append(rec)
                        if rec.error:
                            report.failed.append((media.path, rec.error))
                        elif existed:
                            report.updated += 1
                        else:
                            report.added += 1
                        report.items += len(rec.items)
                        bar.update(1)
                        if on_progress is not None:
                            on_progress(bar.n, len(todo))
                    self.store.write_batch(records)
            finally:
                bar.close()
            self.store.collect_garbage()
        report.seconds = time.perf_counter() - start_time
        return report

    def _compute(self, root: Path, media: MediaFile, digest: str | None) -> FileRecord:
        """Features of one file; an unreadable file becomes a record with its error instead of stopping the run."""
        base = dict(root=str(root), path=media.path, kind=media.kind, size=media.size, mtime_ns=media.mtime_ns)
        path = root / media.path
        try:
            if media.kind == "image":
                image = load_image(path, max_pixels=self.config.max_pixels)
                items: list[ItemRecord] = [self.features(image)]
            else:
                frames = sample_frames(
                    path, every_s=self.config.video_every_s, max_frames=self.config.max_frames_per_video
                )
                items = [self.features(f.image, frame=f.index, time_s=f.time_s) for f in frames]
        except ImageError as exc:
            return FileRecord(**base, sha1=digest, error=str(exc))
        return FileRecord(**base, sha1=digest, items=tuple(items))

    def features(self, image: Image.Image, *, frame: int | None = None, time_s: float | None = None) -> ItemRecord:
        """The shared matcher's proposals (whole image, detector boxes, windows) and their embeddings for one image."""
        boxes, emb = self.matcher.regions(image)
        return ItemRecord(frame, time_s, image.width, image.height, boxes.astype(np.float32), emb)

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
    ) -> list[Hit]:
        """Photos and frames where `concept_name` is found, best first, from the stored features only.

        A proposal's score is its best cosine over the concept's views; a photo is a hit when a proposal reaches
        `tau` (default `config.tau`), and its boxes are the proposals above `tau` after NMS. `root` limits the
        search to one indexed folder, `path` (relative to it) to one file.
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
        try:
            found = self._search(views, tau, key, path)
        except MemoryStoreError:
            # A shard can vanish under a search when a concurrent indexing run compacts it; the items read
            # again point at the new shard.
            found = self._search(views, tau, key, path)
        found.sort(key=lambda c: (-c[0], c[1].path, c[1].frame or 0))
        # Boxes and `Hit`s only for what is returned: a common concept can match thousands of photos.
        return [self._hit(row, scores, tau) for _, row, scores in (found if top is None else found[:top])]

    def _search(
        self, views: np.ndarray, tau: float, root: str | None, path: str | None
    ) -> list[tuple[float, ItemRow, np.ndarray]]:
        """(best score, item, its proposals' scores) of every item whose best proposal reaches `tau`."""
        items = self.store.items(root=root, file_path=path)
        found: list[tuple[float, ItemRow, np.ndarray]] = []
        by_shard: dict[str, list[ItemRow]] = {}
        for it in items:
            by_shard.setdefault(it.shard, []).append(it)
        views_t = np.ascontiguousarray(views.T, dtype=np.float32)
        self._shards = {k: v for k, v in self._shards.items() if k in by_shard}
        for shard, rows in by_shard.items():
            if shard not in self._shards:
                self._shards[shard] = self.store.load_shard(shard)
            emb = self._shards[shard]
            if emb.shape[1] != views_t.shape[0]:
                raise MemoryStoreError(
                    f"library embeddings have {emb.shape[1]} dims but the concept views {views_t.shape[0]}; "
                    "the library and the memory were made with different encoders"
                )
            starts = np.fromiter((r.start for r in rows), dtype=np.int64, count=len(rows))
            counts = np.fromiter((r.count for r in rows), dtype=np.int64, count=len(rows))
            row_scores = _max_cosine(emb, views_t, int((starts + counts).max()))
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            live = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts, strict=True)])
            scores = row_scores[live]
            best = np.maximum.reduceat(scores, offsets)
            for i in np.flatnonzero(best >= tau):
                found.append((float(best[i]), rows[i], scores[offsets[i] : offsets[i] + counts[i]]))
        return found

    def _hit(self, row: ItemRow, scores: np.ndarray, tau: float) -> Hit:
        k = self.config.max_boxes_per_image
        if k == 1:
            keep = np.array([int(np.argmax(scores))])
        else:
            # NMS over the best few only: the k survivors are almost always among the top 10k candidates.
            above = np.flatnonzero(scores >= tau)
            above = above[np.argsort(-scores[above], kind="stable")[: 10 * k]]
            keep = above[nms(row.boxes[above], scores[above], self.config.nms_iou)][:k]
        root = Path(row.root)
        return Hit(
            image=root / row.path,
            root=root,
            path=row.path,
            frame=row.frame,
            time_s=row.time_s,
            boxes=tuple(Box(*map(float, row.boxes[k])) for k in keep),
            scores=tuple(float(scores[k]) for k in keep),
            width=row.width,
            height=row.height,
        )

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


def _max_cosine(emb: np.ndarray, views_t: np.ndarray, rows: int, chunk: int = 65536) -> np.ndarray:
    """Best cosine over views for the first `rows` stored float16 embeddings, (rows,).

    torch multiplies the float16 rows directly (accumulating in float32), ~3x faster than converting them to float32
    for numpy first; scores differ from a float32 product by < 1e-3.
    """
    import torch

    views = torch.from_numpy(np.ascontiguousarray(views_t, dtype=np.float16))
    out = np.empty(rows, dtype=np.float32)
    with torch.inference_mode(), warnings.catch_warnings():
        # The memory-mapped shard is read-only; torch warns that writing through the tensor would be undefined,
        # and nothing writes to it. Wrapping it directly saves copying the whole index on every search.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for lo in range(0, rows, chunk):
            block = torch.from_numpy(np.asarray(emb[lo : min(rows, lo + chunk)]))
            out[lo : lo + len(block)] = (block @ views).amax(dim=1).float().numpy()
    return out


def _sha1(path: Path) -> str | None:
    digest = hashlib.sha1()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def concept_view_embeddings(memory: Any, name: str) -> tuple[np.ndarray, str]:
    """(V, C) unit embeddings of a concept's reference views and the tag of the encoder that made them.

    Takes anything with `view_embeddings(name) -> (array, tag)` (`ConceptMemory` does), so the library can be
    searched against other memories too.
    """
    if not hasattr(memory, "view_embeddings"):
        raise TypeError(f"{type(memory).__name__} is not a concept memory (no view_embeddings)")
    emb, tag = memory.view_embeddings(name)
    emb = np.asarray(emb, dtype=np.float32).reshape(len(emb), -1)
    if len(emb) == 0:
        raise MemoryStoreError(f"concept {name!r} has no reference views to search with")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12), str(tag)
