"""`ConceptMemory`: named personal concepts, their reference views and embeddings, persisted in a directory.

Layout of a memory directory::

    FORMAT          {"format": "focuskit-concept-memory", "version": 1}; a newer version is refused
    memory.sqlite   concepts (name, context, color), views (JPEG, box/mask, thumbnail), vectors (float32 embeddings)
    index.zip       FAISS index over the vectors, stamped with the database generation it was built from
    .lock           file lock serializing writers across processes

Crash safety. SQLite is the source of truth: every change (add, replace, rename, remove, re-embed) is one
transaction that also increments a `generation` counter, so a process killed mid-add leaves either the old or the
new state, never a half-added concept. The vector index is a cache of the database, written atomically after the
commit and stamped with the generation; a reader that finds the stamp behind the database (a crash between the
commit and the index write) or a corrupt index file rebuilds it from the stored vectors. Writers hold a file lock,
so concurrent writers (CLI, server workers) are serialized; readers never block.

Embeddings are tagged with the encoder that made them; adding with another encoder is refused until the memory is
re-embedded, because cosine similarities between two encoders' spaces mean nothing. Each view keeps its (downscaled)
image and box or mask, so re-embedding needs no original files.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.episode import Support
from focuskit.core.errors import BoxError, ConfigError, ImageError, MemoryStoreError
from focuskit.core.image import ImageInput, load_image
from focuskit.core.io import atomic_write_json
from focuskit.memory.index import FaissIndex, IndexConfig
from focuskit.models.encoders import Encoder, FeatureMap, create_encoder
from focuskit.models.proposals import Proposer, create_proposer

log = logging.getLogger(__name__)

FORMAT_NAME = "focuskit-concept-memory"
FORMAT_VERSION = 1
DB_FILE = "memory.sqlite"
INDEX_FILE = "index.zip"
FORMAT_FILE = "FORMAT"
LOCK_FILE = ".lock"
MAX_NAME_LENGTH = 200
SAVE_ALWAYS_MAX = 20_000
"""Up to this many vectors the index file (<= ~110 MB at 1376 dims) is rewritten after every change."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS concepts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    context TEXT NOT NULL DEFAULT '',
    color INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS views (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    source TEXT NOT NULL,
    how TEXT NOT NULL,
    score REAL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    image BLOB NOT NULL,
    mask BLOB,
    thumbnail BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    view_id INTEGER NOT NULL REFERENCES views(id) ON DELETE CASCADE,
    concept_id INTEGER NOT NULL REFERENCES concepts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS views_concept ON views(concept_id);
CREATE INDEX IF NOT EXISTS vectors_concept ON vectors(concept_id);
CREATE INDEX IF NOT EXISTS vectors_view ON vectors(view_id);
"""


# --- configuration ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder: a `create_encoder` name and its options. Stored in the memory to rebuild it."""

    name: str = "mobilenetv2"
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Encoder:
        return create_encoder(self.name, **self.options)


DEFAULT_ENCODER_NAME = "mobilenetv2"
DEFAULT_ENCODER_OPTIONS: dict[str, Any] = {"layer": "s16+s32"}
"""PeKit's default: MobileNetV2 stride-16 parts + stride-32 semantics. On the sample set it separated positives from
negatives (min 0.65 vs max 0.57 cosine) where stride-16 alone overlapped (0.44 vs 0.60)."""


def default_encoder_spec() -> EncoderSpec:
    return EncoderSpec(DEFAULT_ENCODER_NAME, dict(DEFAULT_ENCODER_OPTIONS))


@dataclass(frozen=True)
class ProposerSpec:
    """A `create_proposer` name and its options (the proposal source of auto-boxing and detection)."""

    name: str = "ssd"
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Proposer:
        return create_proposer(self.name, **self.options)


@dataclass(frozen=True)
class AugmentConfig:
    """Extra embeddings stored per view, so a query that shows the object mirrored or smaller still matches.

    A close-up reference fills the encoder's input while the same object in a new photo may cover a fifth of it;
    CNN features are not scale invariant, so each view is also embedded "zoomed out" (placed, by reflection
    padding, in a canvas `f` times larger). On the scikit-image photos, with MobileNetV2 stride-16 features, this
    raised the small pasted cat's best cosine from 0.44-0.56 to 0.64-0.80 without raising negatives (with the
    default s16+s32 features the gain is small).
    """

    hflip: bool = True
    zoom_out: list[float] = field(default_factory=lambda: [2.5])

    def __post_init__(self) -> None:
        bad = [f for f in self.zoom_out if not 1.0 < f <= 8.0]
        if bad:
            raise ConfigError(f"augment.zoom_out factors must be in (1, 8], got {bad}")


@dataclass(frozen=True)
class MemoryConfig:
    view_max_side: int = 1024
    """Stored view images are downscaled so their longer side is at most this (re-embedding reads them)."""
    thumbnail_side: int = 160
    jpeg_quality: int = 92
    lock_timeout: float = 120.0
    """Seconds a writer waits for another writer before giving up with an error."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        if self.view_max_side < 32 or self.thumbnail_side < 16:
            raise ConfigError(
                f"view_max_side must be >= 32 and thumbnail_side >= 16, got {self.view_max_side}, {self.thumbnail_side}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


# --- results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewReport:
    """What happened to one reference view in `add`: the region used (in the caller's image pixels) and how."""

    index: int
    source: str
    how: str
    """'box' (given), 'mask' (given), 'auto' (picked by auto-boxing) or 'skipped'."""
    box: Box | None
    score: float | None = None
    """Auto-boxing confidence in [0, 1] for how='auto'."""
    reason: str = ""


@dataclass(frozen=True)
class AddReport:
    name: str
    views: list[ViewReport]
    replaced: bool
    vectors: int

    @property
    def used(self) -> list[ViewReport]:
        return [v for v in self.views if v.how != "skipped"]


@dataclass(frozen=True)
class ConceptInfo:
    name: str
    context: str
    color: int
    """Palette slot: the concept's box color in every image and frame (see `focuskit.viz.draw.PALETTE`)."""
    views: int
    vectors: int
    created: float


@dataclass(frozen=True)
class StoredView:
    """A stored reference view: the downscaled image, the object's box (and mask) in its pixels, a thumbnail."""

    id: int
    concept: str
    source: str
    how: str
    box: Box
    image: Image.Image
    mask: np.ndarray | None
    thumbnail: Image.Image


@dataclass(frozen=True)
class ConceptScores:
    """Per query embedding, the best cosine with each concept's views: `scores` (N, C), -inf where unseen."""

    names: list[str]
    scores: np.ndarray


@dataclass
class _PreparedView:
    index: int
    source: str
    how: str
    score: float | None
    image: Image.Image
    box: Box
    mask: np.ndarray | None
    scale: float
    vectors: list[tuple[str, np.ndarray]]
    jpeg: bytes
    """The stored image bytes: exactly the pixels that were embedded."""


# --- helpers ----------------------------------------------------------------------------------------------------
def _encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def _decode_image(data: bytes, where: str) -> Image.Image:
    try:
        return load_image(data, what=where)
    except ImageError as exc:
        raise MemoryStoreError(f"memory is corrupt: {exc}") from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise MemoryStoreError(f"a concept name must be a non-empty string, got {name!r}")
    clean = name.strip()
    if len(clean) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in clean):
        raise MemoryStoreError(
            f"a concept name must be at most {MAX_NAME_LENGTH} printable characters, got {clean[:40]!r}..."
        )
    return clean


def _source_name(image: ImageInput, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i + 1}"


def _load_mask(mask: np.ndarray | str | Path, size: tuple[int, int], where: str) -> np.ndarray:
    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise ImageError(f"mask not found: {path} ({where})")
        with Image.open(path) as m:
            arr = np.asarray(m.convert("L")) > 0
    else:
        arr = np.asarray(mask).astype(bool)
    if arr.shape != (size[1], size[0]):
        raise ImageError(f"mask of {where} is {arr.shape[1]}x{arr.shape[0]}, the image is {size[0]}x{size[1]}")
    if not arr.any():
        raise ImageError(f"mask of {where} is empty")
    return arr


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _zoom_out(image: Image.Image, factor: float) -> tuple[Image.Image, int, int]:
    """The image placed by reflection padding at the center of a canvas `factor` times larger; returns its offset."""
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    ch, cw = round(h * factor), round(w * factor)
    top, left = (ch - h) // 2, (cw - w) // 2
    # np.pad "reflect" cannot pad more than the array's size at once; "symmetric" tiling via wrap of a mirror does.
    mirrored = np.concatenate([arr, arr[:, ::-1]], axis=1)
    mirrored = np.concatenate([mirrored, mirrored[::-1]], axis=0)
    reps_y, reps_x = -(-(ch + 2 * h) // (2 * h)), -(-(cw + 2 * w) // (2 * w))
    tiled = np.tile(mirrored, (reps_y + 1, reps_x + 1, 1))
    oy, ox = 2 * h - top % (2 * h), 2 * w - left % (2 * w)
    canvas = tiled[oy : oy + ch, ox : ox + cw].copy()
    canvas[top : top + h, left : left + w] = arr
    return Image.fromarray(canvas), left, top


class ConceptMemory:
    """Named concepts with reference views, stored under `directory` (created on first use).

    `encoder` is what embeds views and queries: an `Encoder`, an `EncoderSpec`, a `create_encoder` name, or None to
    use the one the memory was built with (or `default_encoder_spec()` for a new memory). `proposer` is the proposal
    source for views added without a box.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        encoder: Encoder | EncoderSpec | str | None = None,
        proposer: Proposer | ProposerSpec | None = None,
        config: MemoryConfig | None = None,
        create: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.config = config or MemoryConfig()
        self._encoder_arg = encoder
        self._encoder: Encoder | None = encoder if not isinstance(encoder, (EncoderSpec, str, type(None))) else None
        self._built_spec: EncoderSpec | None = None
        self._proposer_arg = proposer
        self._proposer: Proposer | None = None if isinstance(proposer, (ProposerSpec, type(None))) else proposer
        self._thread_lock = threading.RLock()
        self._open_directory(create)
        self._file_lock = filelock.FileLock(str(self.directory / LOCK_FILE), timeout=self.config.lock_timeout)
        self._db = self._connect()
        self._loaded_generation = -1
        self._index: FaissIndex | None = None
        self._index_encoder: str | None = None
        self._index_file_generation = -1
        self._unsaved = 0
        self._vector_ids = np.zeros((0,), dtype=np.int64)
        self._vector_concepts = np.zeros((0,), dtype=np.int64)
        self._concept_names: dict[int, str] = {}

    # --- opening ------------------------------------------------------------------------------------------------
    def _open_directory(self, create: bool) -> None:
        fmt_path = self.directory / FORMAT_FILE
        if not self.directory.exists() or (self.directory.is_dir() and not any(self.directory.iterdir())):
            if not create:
                raise MemoryStoreError(f"no concept memory at {self.directory}")
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_json(fmt_path, {"format": FORMAT_NAME, "version": FORMAT_VERSION})
            return
        if not self.directory.is_dir():
            raise MemoryStoreError(f"concept memory path {self.directory} is a file, expected a directory")
        if not fmt_path.is_file():
            raise MemoryStoreError(
                f"{self.directory} is not empty and has no {FORMAT_FILE} file: it is not a focuskit concept memory "
                "(use a new or empty directory)"
            )
        try:
            fmt = json.loads(fmt_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise MemoryStoreError(
                f"concept memory {self.directory} is corrupt: cannot read {FORMAT_FILE} ({exc})"
            ) from None
        if not isinstance(fmt, dict) or fmt.get("format") != FORMAT_NAME or not isinstance(fmt.get("version"), int):
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: {FORMAT_FILE} holds {fmt!r}")
        if fmt["version"] > FORMAT_VERSION:
            raise MemoryStoreError(
                f"concept memory {self.directory} has format version {fmt['version']}, newer than the version "
                f"{FORMAT_VERSION} this focuskit reads: upgrade focuskit"
            )

    def _connect(self) -> sqlite3.Connection:
        path = self.directory / DB_FILE
        try:
            db = sqlite3.connect(path, timeout=self.config.lock_timeout, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0')")
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: {path} ({exc})") from None
        return db

    def close(self) -> None:
        """Write a pending index update (if no other writer holds the lock) and close the database."""
        with self._thread_lock:
            if self._index is not None and self._should_save(len(self._index), final=True) and self._try_lock():
                try:
                    self._save_index(self._loaded_generation)
                finally:
                    self._file_lock.release()
            self._db.close()

    def __enter__(self) -> ConceptMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- database access ----------------------------------------------------------------------------------------
    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._thread_lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt or unreadable ({exc})") from None

    def _meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def generation(self) -> int:
        """Counter incremented by every committed change (to detect changes made by other processes)."""
        value = self._meta("generation")
        try:
            return int(value) if value is not None else 0
        except ValueError:
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: generation {value!r}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One serialized, atomic change: file lock, then a transaction that also bumps the generation."""
        with self._thread_lock:
            try:
                self._file_lock.acquire()
            except filelock.Timeout:
                raise MemoryStoreError(
                    f"concept memory {self.directory} is locked by another writer for over "
                    f"{self.config.lock_timeout:.0f} s ({self.directory / LOCK_FILE})"
                ) from None
            try:
                cur = self._db.cursor()
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    yield cur
                    cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                    cur.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._refresh(persist=True)
            except sqlite3.DatabaseError as exc:
                raise MemoryStoreError(f"concept memory {self.directory} is corrupt or unwritable ({exc})") from None
            finally:
                self._file_lock.release()

    # --- encoder ------------------------------------------------------------------------------------------------
    @property
    def encoder_name(self) -> str | None:
        """Tag of the encoder the stored embeddings were made with (None while the memory is empty)."""
        return self._meta("encoder")

    @property
    def dim(self) -> int | None:
        value = self._meta("dim")
        return int(value) if value else None

    @property
    def encoder(self) -> Encoder:
        """The encoder for this memory, built on first use from the argument, the stored spec or the default."""
        if self._encoder is None:
            arg = self._encoder_arg
            spec = EncoderSpec(arg) if isinstance(arg, str) else arg if isinstance(arg, EncoderSpec) else None
            from_memory = spec is None
            spec = spec or self._stored_spec()
            try:
                self._encoder = spec.create()
            except ConfigError as exc:
                if not from_memory:
                    raise
                raise MemoryStoreError(
                    f"concept memory {self.directory} was built with encoder {self.encoder_name!r}, which cannot "
                    f"be rebuilt from its name ({exc}); pass that encoder explicitly"
                ) from None
            self._built_spec = spec
        return self._encoder

    def _stored_spec(self) -> EncoderSpec:
        raw = self._meta("encoder_spec")
        if raw:
            try:
                data = json.loads(raw)
                return EncoderSpec(name=data["name"], options=dict(data.get("options") or {}))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MemoryStoreError(f"concept memory {self.directory} is corrupt: encoder spec {raw!r}") from None
        tag = self.encoder_name
        if tag is not None:
            return EncoderSpec(name=tag)
        return default_encoder_spec()

    def _spec_json(self) -> str:
        """How to rebuild the current encoder, stored with the memory ("" for an `Encoder` object passed in)."""
        spec = self._built_spec
        return "" if spec is None else json.dumps({"name": spec.name, "options": spec.options})

    def _check_encoder(self, encoder: Encoder) -> None:
        stored = self.encoder_name
        if stored is not None and stored != encoder.name:
            raise MemoryStoreError(
                f"concept memory {self.directory} holds embeddings from encoder {stored!r}, not {encoder.name!r}: "
                f"mixing encoders is refused; re-embed the memory first (focuskit concept reembed --encoder ...)"
            )
        dim = self.dim
        if dim is not None and stored == encoder.name and dim != encoder.dim:
            raise MemoryStoreError(
                f"concept memory {self.directory} stores {dim}-dim embeddings but encoder {encoder.name!r} makes "
                f"{encoder.dim}-dim ones"
            )

    @property
    def proposer(self) -> Proposer:
        if self._proposer is None:
            spec = self._proposer_arg if isinstance(self._proposer_arg, ProposerSpec) else ProposerSpec()
            self._proposer = spec.create()
        return self._proposer

    # --- index cache --------------------------------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction, so the id maps and vectors read together come from one committed state."""
        with self._thread_lock:
            if self._db.in_transaction:
                yield
                return
            try:
                self._db.execute("BEGIN")
            except sqlite3.DatabaseError as exc:
                raise MemoryStoreError(f"concept memory {self.directory} is corrupt or unreadable ({exc})") from None
            try:
                yield
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _refresh(self, *, persist: bool = False) -> None:
        """Bring the in-memory index and id maps up to the database's generation.

        The index is patched by id difference (vector ids are never reused and vectors never change in place), so a
        stale index file after a crash, or changes by another process, cost only the vectors that differ. A
        missing or corrupt index file, or a change of encoder, rebuilds it from the stored vectors. `persist` (set by
        writers, who hold the lock) writes the updated index file; readers write it only if the lock is free.
        """
        with self._thread_lock, self._snapshot():
            gen = self.generation()
            if gen == self._loaded_generation and self._index is not None:
                return
            rows = self._query("SELECT id, name FROM concepts")
            self._concept_names = {int(i): str(n) for i, n in rows}
            ids = self._query("SELECT id, concept_id FROM vectors ORDER BY id")
            arr = np.asarray(ids, dtype=np.int64).reshape(-1, 2)
            self._vector_ids, self._vector_concepts = arr[:, 0].copy(), arr[:, 1].copy()
            encoder, dim = self.encoder_name, self.dim or 1
            index, index_gen = None, -1
            if self._index is not None and self._index_encoder == encoder and self._index.dim == dim:
                index, index_gen = self._index, self._loaded_generation
            else:
                index, index_gen = self._load_index_file(encoder, dim)
            if index is None or not self._sync(index):
                index = self._rebuild_index()
                self._unsaved = max(1, len(index))
            self._index, self._index_encoder, self._loaded_generation = index, encoder, gen
            if index_gen != gen and self._index_file_generation != gen:
                self._unsaved = max(self._unsaved, 1)
        if self._should_save(len(index)) and (persist or self._try_lock()):
            try:
                self._save_index(gen)
            finally:
                if not persist:
                    self._file_lock.release()

    def _should_save(self, size: int, *, final: bool = False) -> bool:
        """Rewrite the index file after every change while it is small; past `SAVE_ALWAYS_MAX` vectors, once 1% of
        it (at least 1000 vectors) changed, or when the memory is closed. A stale file is never wrong, only slower
        to open: the database is the truth and the difference is patched in by id."""
        if self._unsaved <= 0:
            return False
        return final or size <= SAVE_ALWAYS_MAX or self._unsaved >= max(1000, size // 100)

    def _save_index(self, gen: int) -> None:
        if self._index is None or self.generation() != gen:
            return
        try:
            self._index.save(self.directory / INDEX_FILE, {"generation": gen, "encoder": self._index_encoder})
        except OSError as exc:  # the index is a cache of the committed database: warn, never fail the write
            log.warning("could not write the vector index of %s (%s); it will be rebuilt", self.directory, exc)
            return
        self._index_file_generation = gen
        self._unsaved = 0

    def _try_lock(self) -> bool:
        try:
            self._file_lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        return True

    def _load_index_file(self, encoder: str | None, dim: int) -> tuple[FaissIndex | None, int]:
        path = self.directory / INDEX_FILE
        if not path.is_file():
            return None, -1
        try:
            index, meta = FaissIndex.load(path, self.config.index)
        except MemoryStoreError as exc:
            log.warning("%s; rebuilding it from the stored embeddings", exc)
            return None, -1
        if meta.get("encoder") != encoder or index.dim != dim:
            return None, -1
        gen = int(meta.get("generation", -1))
        self._index_file_generation = gen
        return index, gen

    def _sync(self, index: FaissIndex) -> bool:
        """Patch `index` to hold exactly the database's vector ids; False if a rebuild would be cheaper."""
        have = np.sort(index.ids())
        want = self._vector_ids
        removed = np.setdiff1d(have, want, assume_unique=True)
        added = np.setdiff1d(want, have, assume_unique=True)
        if len(added) > max(1000, len(want) // 2):
            return False
        self._unsaved += len(added) + len(removed)
        if len(removed):
            index.remove(removed)
        for start in range(0, len(added), 500):
            chunk = [int(i) for i in added[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT id, embedding FROM vectors WHERE id IN ({marks}) ORDER BY id", chunk)
            index.add(np.stack([self._vector(b, i) for i, b in rows]), np.array([r[0] for r in rows], dtype=np.int64))
        return len(index) == len(want)

    def _rebuild_index(self) -> FaissIndex:
        dim = self.dim
        index = FaissIndex(dim or 1, self.config.index)
        if dim is None or not len(self._vector_ids):
            return index
        total = len(self._vector_ids)
        bar = tqdm(total=total, desc="rebuild index", unit="vec", disable=total < 50_000)
        last = -1
        while True:
            rows = self._query("SELECT id, embedding FROM vectors WHERE id > ? ORDER BY id LIMIT 20000", (last,))
            if not rows:
                break
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            index.add(np.stack([self._vector(r[1], r[0]) for r in rows]), ids)
            last = int(ids[-1])
            bar.update(len(rows))
        bar.close()
        return index

    def _vector(self, blob: bytes, vid: int) -> np.ndarray:
        vec = np.frombuffer(blob, dtype=np.float32)
        if len(vec) != self.dim:
            raise MemoryStoreError(
                f"concept memory {self.directory} is corrupt: vector {vid} has {len(vec)} values, expected {self.dim}"
            )
        return vec

    # --- reading ------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM concepts ORDER BY id")]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._query("SELECT 1 FROM concepts WHERE name = ?", (name.strip(),)))

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM concepts")[0][0])

    def list(self) -> list[ConceptInfo]:
        rows = self._query(
            "SELECT c.name, c.context, c.color, c.created, "
            "(SELECT COUNT(*) FROM views v WHERE v.concept_id = c.id), "
            "(SELECT COUNT(*) FROM vectors x WHERE x.concept_id = c.id) FROM concepts c ORDER BY c.id"
        )
        return [ConceptInfo(n, ctx, int(col), int(nv), int(nx), float(t)) for n, ctx, col, t, nv, nx in rows]

    def get(self, name: str) -> ConceptInfo:
        for info in self.list():
            if info.name == name.strip():
                return info
        raise MemoryStoreError(self._unknown(name))

    def _unknown(self, name: str) -> str:
        known = self.names()
        listing = ", ".join(repr(n) for n in known[:20]) if known else "none"
        return f"no concept {name!r} in memory {self.directory}; concepts: {listing}"

    def views(self, name: str) -> list[StoredView]:
        rows = self._query(
            "SELECT v.id, v.source, v.how, v.x1, v.y1, v.x2, v.y2, v.image, v.mask, v.thumbnail FROM views v "
            "JOIN concepts c ON c.id = v.concept_id WHERE c.name = ? ORDER BY v.position",
            (name.strip(),),
        )
        if not rows and name.strip() not in self:
            raise MemoryStoreError(self._unknown(name))
        out = []
        for vid, source, how, x1, y1, x2, y2, img, mask, thumb in rows:
            m = None if mask is None else np.asarray(_decode_image(mask, f"mask of view {vid}").convert("L")) > 0
            out.append(
                StoredView(
                    id=int(vid),
                    concept=name.strip(),
                    source=source,
                    how=how,
                    box=Box(x1, y1, x2, y2),
                    image=_decode_image(img, f"view {vid}"),
                    mask=m,
                    thumbnail=_decode_image(thumb, f"thumbnail of view {vid}"),
                )
            )
        return out

    def view_embeddings(self, name: str) -> tuple[np.ndarray, str]:
        """(V, C) stored embeddings of one concept (views and their mirrored/zoomed variants) and the encoder tag.

        For consumers that match against features computed elsewhere (the photo library's stored proposals), so
        they never reach into the database.
        """
        if name.strip() not in self:
            raise MemoryStoreError(self._unknown(name))
        rows = self._query(
            "SELECT x.id, x.embedding FROM vectors x JOIN concepts c ON c.id = x.concept_id WHERE c.name = ? "
            "ORDER BY x.id",
            (name.strip(),),
        )
        dim = self.dim or 0
        emb = np.stack([self._vector(blob, vid) for vid, blob in rows]) if rows else np.zeros((0, dim), np.float32)
        return emb, str(self.encoder_name)

    def supports(self, name: str) -> list[Support]:
        """The concept's views as localizer supports (image + box), for in-context engines."""
        return [Support(v.image, v.box) for v in self.views(name)]

    def match(self, embeddings: np.ndarray, *, top_k: int = 64) -> ConceptScores:
        """Best cosine per (query embedding, concept), over each concept's views among the `top_k` nearest vectors.

        (N, C) embeddings in -> `ConceptScores` with one column per concept that appears in any query's top-k.
        """
        self._refresh()
        assert self._index is not None  # set by _refresh
        q = np.asarray(embeddings, dtype=np.float32)
        if q.ndim != 2 or (self.dim is not None and q.shape[1] != self.dim):
            raise MemoryStoreError(f"query embeddings must be (N, {self.dim}), got {q.shape}")
        if len(q) == 0 or len(self._vector_ids) == 0:
            return ConceptScores([], np.zeros((len(q), 0), dtype=np.float32))
        k = int(min(top_k, len(self._vector_ids)))
        scores, ids = self._index.search(q, k)
        valid = ids >= 0
        pos = np.searchsorted(self._vector_ids, np.where(valid, ids, 0))
        pos = np.clip(pos, 0, len(self._vector_ids) - 1)
        valid &= self._vector_ids[pos] == ids
        concepts = np.where(valid, self._vector_concepts[pos], -1)
        present = sorted({int(c) for c in np.unique(concepts) if c >= 0})
        col = {c: j for j, c in enumerate(present)}
        out = np.full((len(q), len(present)), -np.inf, dtype=np.float32)
        rows, slots = np.nonzero(valid)
        cols = np.array([col[int(c)] for c in concepts[rows, slots]], dtype=np.int64)
        np.maximum.at(out, (rows, cols), scores[rows, slots])
        return ConceptScores([self._concept_names[c] for c in present], out)

    # --- adding -------------------------------------------------------------------------------------------------
    def add(
        self,
        name: str,
        images: Sequence[ImageInput],
        *,
        boxes: Sequence[Box | None] | None = None,
        masks: Sequence[np.ndarray | str | Path | None] | None = None,
        context: str = "",
        replace: bool = False,
        progress: bool = False,
    ) -> AddReport:
        """Add concept `name` from reference `images`, each with a box, a mask, or neither (found automatically).

        Raises `MemoryStoreError` for a duplicate name without `replace`, an encoder mismatch, or no usable view;
        `ImageError`/`BoxError` name the view whose file or box is bad. Nothing is stored unless all goes well.
        """
        name = _check_name(name)
        if not isinstance(context, str):
            raise MemoryStoreError(f"context must be text, got {type(context).__name__}")
        images = list(images)
        if not images:
            raise MemoryStoreError(f"concept {name!r}: no reference images given (need at least one view)")
        for what, given in (("boxes", boxes), ("masks", masks)):
            if given is not None and len(given) != len(images):
                raise MemoryStoreError(
                    f"concept {name!r}: got {len(images)} images and {len(given)} {what}: give one per image "
                    "(None for a view to be boxed automatically)"
                )
        if name in self and not replace:
            raise MemoryStoreError(
                f"concept {name!r} already exists in {self.directory}: pick another name or replace it"
            )
        encoder = self.encoder
        self._check_encoder(encoder)
        prepared, reports = self._prepare(name, images, boxes, masks, encoder, progress)
        if not prepared:
            reasons = "; ".join(f"{r.source}: {r.reason}" for r in reports)
            raise MemoryStoreError(f"concept {name!r}: no usable view ({reasons})")
        n_vectors = sum(len(p.vectors) for p in prepared)
        with self._write() as cur:
            self._check_encoder(encoder)
            old = cur.execute("SELECT id, color FROM concepts WHERE name = ?", (name,)).fetchone()
            if old is not None and not replace:
                raise MemoryStoreError(f"concept {name!r} already exists in {self.directory}")
            if old is not None:
                cur.execute("DELETE FROM concepts WHERE id = ?", (old[0],))
            if self._meta_in(cur, "encoder") is None:
                self._set_meta(cur, "encoder", encoder.name)
                self._set_meta(cur, "dim", str(encoder.dim))
                self._set_meta(cur, "encoder_spec", self._spec_json())
            color = int(old[1]) if old is not None else self._free_color(cur)
            cur.execute(
                "INSERT INTO concepts(name, context, color, created) VALUES (?, ?, ?, ?)",
                (name, context.strip(), color, time.time()),
            )
            concept_id = int(cur.lastrowid or 0)
            for pos, p in enumerate(prepared):
                self._insert_view(cur, concept_id, pos, p)
        return AddReport(name=name, views=reports, replaced=old is not None, vectors=n_vectors)

    @staticmethod
    def _meta_in(cur: sqlite3.Cursor, key: str) -> str | None:
        row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(cur: sqlite3.Cursor, key: str, value: str) -> None:
        cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @staticmethod
    def _free_color(cur: sqlite3.Cursor) -> int:
        from focuskit.viz.draw import PALETTE

        used = [int(r[0]) for r in cur.execute("SELECT color FROM concepts").fetchall()]
        counts = [used.count(i) for i in range(len(PALETTE))]
        return int(np.argmin(counts))

    def _insert_view(self, cur: sqlite3.Cursor, concept_id: int, position: int, p: _PreparedView) -> None:
        q = self.config.jpeg_quality
        thumb = p.image.crop(tuple(round(v) for v in p.box.to_xyxy()))
        thumb.thumbnail((self.config.thumbnail_side, self.config.thumbnail_side))
        mask_blob = None if p.mask is None else _encode_image(Image.fromarray(p.mask.astype(np.uint8) * 255), "PNG", q)
        cur.execute(
            "INSERT INTO views(concept_id, position, source, how, score, width, height, x1, y1, x2, y2, image, mask, "
            "thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                concept_id, position, p.source, p.how, p.score, p.image.width, p.image.height, *p.box.to_xyxy(),
                p.jpeg, mask_blob, _encode_image(thumb, "JPEG", q),
            ),
        )  # fmt: skip
        view_id = int(cur.lastrowid or 0)
        cur.executemany(
            "INSERT INTO vectors(view_id, concept_id, variant, embedding) VALUES (?, ?, ?, ?)",
            [(view_id, concept_id, variant, vec.astype(np.float32).tobytes()) for variant, vec in p.vectors],
        )

    def _stored_image(self, img: Image.Image) -> tuple[Image.Image, float, bytes]:
        """The view as it will be stored (downscaled, JPEG round trip), the scale applied, and the JPEG bytes."""
        side = self.config.view_max_side
        scale = min(1.0, side / max(img.size))
        if scale < 1.0:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
        # Embed exactly the pixels that will be stored, so re-embedding later reproduces these vectors.
        data = _encode_image(img, "JPEG", self.config.jpeg_quality)
        return load_image(data), scale, data

    def _prepare(
        self,
        name: str,
        images: list[ImageInput],
        boxes: Sequence[Box | None] | None,
        masks: Sequence[np.ndarray | str | Path | None] | None,
        encoder: Encoder,
        progress: bool,
    ) -> tuple[list[_PreparedView], list[ViewReport]]:
        from focuskit.memory.autobox import pick_boxes

        loaded: list[tuple[int, str, Image.Image, float, Box | None, np.ndarray | None]] = []
        jpegs: dict[int, bytes] = {}
        unreadable: list[ViewReport] = []
        for i, src in enumerate(tqdm(images, desc=f"views of {name}", disable=not progress, unit="view")):
            where = f"view {i + 1} of {name!r}"
            try:
                original = load_image(src, what=where)
            except ImageError as exc:  # one bad photo out of several should not sink the others: report it
                unreadable.append(ViewReport(i, _source_name(src, i), "skipped", None, reason=str(exc)))
                continue
            img, scale, jpegs[i] = self._stored_image(original)
            box = boxes[i] if boxes is not None else None
            mask = masks[i] if masks is not None else None
            m = None
            if mask is not None:
                full = _load_mask(mask, original.size, where)
                m = np.asarray(Image.fromarray(full).resize(img.size, Image.NEAREST)) > 0
                if not m.any():
                    raise ImageError(f"mask of {where} vanishes when the view is downscaled to {img.size}")
            if box is not None:
                if not isinstance(box, Box):
                    raise BoxError(f"{where}: expected a Box, got {type(box).__name__}")
                box.validate(original.size, where=f"{where}, {_source_name(src, i)}")
                box = box.clip(original.size).scale(scale)
            loaded.append((i, _source_name(src, i), img, scale, box, m))
        fmaps: dict[int, FeatureMap] = {i: encoder.encode(img) for i, _, img, _, _, _ in loaded}
        anchors = []
        for i, _, _img, _, box, m in loaded:
            if m is not None:
                anchors.append(fmaps[i].pool_masks(m[None])[0])
            elif box is not None:
                anchors.append(fmaps[i].pool_boxes(box.to_array()[None])[0])
        todo = [item for item in loaded if item[4] is None and item[5] is None]
        picks = {}
        if todo:
            found = pick_boxes(
                [t[2] for t in todo],
                [fmaps[t[0]] for t in todo],
                self.proposer,
                anchors=np.asarray(anchors, dtype=np.float32).reshape(-1, encoder.dim) if anchors else None,
            )
            picks = {t[0]: f for t, f in zip(todo, found, strict=True)}
        prepared: list[_PreparedView] = []
        reports: list[ViewReport] = list(unreadable)
        for i, source, img, scale, box, m in loaded:
            how, score = ("mask" if m is not None else "box"), None
            if m is not None:
                box = _mask_box(m)
            elif box is None:
                pick = picks.get(i)
                if pick is None:
                    reports.append(ViewReport(i, source, "skipped", None, reason="no object candidate found"))
                    continue
                box, how, score = pick.box, "auto", pick.score
            assert box is not None
            vectors = self._embed_view(encoder, img, box, m, fmaps[i])
            prepared.append(_PreparedView(i, source, how, score, img, box, m, scale, vectors, jpegs[i]))
            reports.append(ViewReport(i, source, how, box.scale(1.0 / scale), score))
        return prepared, sorted(reports, key=lambda r: r.index)

    def _embed_view(
        self, encoder: Encoder, img: Image.Image, box: Box, mask: np.ndarray | None, fmap: FeatureMap | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """The view's embedding plus its augmented variants (mirrored, zoomed out)."""

        def pooled(fm: FeatureMap, b: Box, m: np.ndarray | None) -> np.ndarray:
            return fm.pool_masks(m[None])[0] if m is not None else fm.pool_boxes(b.to_array()[None])[0]

        fmap = fmap or encoder.encode(img)
        out = [("original", pooled(fmap, box, mask))]
        aug = self.config.augment
        if aug.hflip:
            w = img.width
            fb = Box(w - box.x2, box.y1, w - box.x1, box.y2)
            fm_ = None if mask is None else mask[:, ::-1].copy()
            out.append(("hflip", pooled(encoder.encode(ImageOps.mirror(img)), fb, fm_)))
        for f in aug.zoom_out:
            canvas, left, top = _zoom_out(img, f)
            zb = Box(box.x1 + left, box.y1 + top, box.x2 + left, box.y2 + top)
            zm = None
            if mask is not None:
                zm = np.zeros((canvas.height, canvas.width), dtype=bool)
                zm[top : top + img.height, left : left + img.width] = mask
            out.append((f"zoom{f:g}", pooled(encoder.encode(canvas), zb, zm)))
        return out

    # --- editing ------------------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM concepts WHERE name = ?", (name.strip(),))
            if cur.rowcount == 0:
                raise MemoryStoreError(self._unknown(name))

    def rename(self, old: str, new: str) -> None:
        new = _check_name(new)
        with self._write() as cur:
            if cur.execute("SELECT 1 FROM concepts WHERE name = ?", (new,)).fetchone():
                raise MemoryStoreError(f"cannot rename {old!r} to {new!r}: a concept named {new!r} already exists")
            cur.execute("UPDATE concepts SET name = ? WHERE name = ?", (new, old.strip()))
            if cur.rowcount == 0:
                raise MemoryStoreError(self._unknown(old))

    def set_context(self, name: str, context: str) -> None:
        with self._write() as cur:
            cur.execute("UPDATE concepts SET context = ? WHERE name = ?", (context.strip(), name.strip()))
            if cur.rowcount == 0:
                raise MemoryStoreError(self._unknown(name))

    def color(self, name: str) -> int:
        rows = self._query("SELECT color FROM concepts WHERE name = ?", (name.strip(),))
        if not rows:
            raise MemoryStoreError(self._unknown(name))
        return int(rows[0][0])

    def context(self, name: str) -> str:
        rows = self._query("SELECT context FROM concepts WHERE name = ?", (name.strip(),))
        if not rows:
            raise MemoryStoreError(self._unknown(name))
        return str(rows[0][0])

    def re_embed(self, encoder: Encoder | EncoderSpec | str, *, progress: bool = True) -> int:
        """Recompute every view's vectors with `encoder` (from the stored view images) and retag the memory.

        One transaction: until it commits, the memory keeps its old embeddings. Returns the number of vectors.
        """
        if isinstance(encoder, str):
            spec: EncoderSpec | None = EncoderSpec(encoder)
        else:
            spec = encoder if isinstance(encoder, EncoderSpec) else None
        enc = spec.create() if spec is not None else encoder
        assert not isinstance(enc, (str, EncoderSpec))
        rows = self._query("SELECT id, concept_id, x1, y1, x2, y2, image, mask FROM views ORDER BY id")
        new_vectors: list[tuple[int, int, str, bytes]] = []
        for vid, cid, x1, y1, x2, y2, img_blob, mask_blob in tqdm(
            rows, desc=f"re-embed with {enc.name}", disable=not progress, unit="view"
        ):
            img = _decode_image(img_blob, f"view {vid}")
            mask = None if mask_blob is None else np.asarray(_decode_image(mask_blob, "mask").convert("L")) > 0
            for variant, vec in self._embed_view(enc, img, Box(x1, y1, x2, y2), mask):
                new_vectors.append((int(vid), int(cid), variant, vec.astype(np.float32).tobytes()))
        with self._write() as cur:
            current = {int(r[0]) for r in cur.execute("SELECT id FROM views").fetchall()}
            if current != {int(r[0]) for r in rows}:
                raise MemoryStoreError("the memory changed during re-embedding (another writer); run it again")
            cur.execute("DELETE FROM vectors")
            cur.executemany(
                "INSERT INTO vectors(view_id, concept_id, variant, embedding) VALUES (?, ?, ?, ?)", new_vectors
            )
            self._set_meta(cur, "encoder", enc.name)
            self._set_meta(cur, "dim", str(enc.dim))
            self._set_meta(
                cur, "encoder_spec", "" if spec is None else json.dumps({"name": spec.name, "options": spec.options})
            )
        self._encoder_arg, self._encoder, self._built_spec = enc, enc, spec
        return len(new_vectors)

    def verify(self) -> None:
        """Full integrity check (SQLite `quick_check`, vector sizes, index agreement); raises MemoryStoreError."""
        result = self._query("PRAGMA quick_check")
        if not result or result[0][0] != "ok":
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: {result[:3]}")
        self._loaded_generation = -1
        self._refresh()
        if self._index is not None and len(self._index) != len(self._vector_ids):
            raise MemoryStoreError(f"concept memory {self.directory}: index and database disagree")

    def __repr__(self) -> str:
        return f"ConceptMemory({str(self.directory)!r})"


def open_memory(directory: str | Path, **kwargs: Any) -> ConceptMemory:
    """Open an existing memory (raises if there is none), for commands that only read it."""
    return ConceptMemory(directory, create=False, **kwargs)
