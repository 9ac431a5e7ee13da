"""`ConceptMemory`: named personal concepts, their reference views and embeddings, persisted in a directory.

Layout of a memory directory::

    FORMAT          {"format": "focuskit-concept-memory", "version": 1}; a newer version is refused
    memory.sqlite   concepts (name, context, color), views (JPEG, box/mask, thumbnail), vectors (float32 embeddings)
    index.zip       vector index over the vectors, stamped with the database generation it was built from
    .lock           file lock serializing writers across processes

The pieces live in small modules behind this facade: `focuskit.core.state` (creating, recognising and locking the
directory; the first FORMAT write is atomic, so a crash leaves no memory or a valid one), `database` (schema,
serialized transactions, generations), `index_cache` (the vector index as a cache of the database, and matching),
`views` (turning photos into stored views and embeddings) and `config`.

Crash safety. SQLite is the source of truth: every change is one transaction that also increments a `generation`
counter, so a process killed mid-add leaves either the old or the new state, never a half-added concept. The vector
index is a cache of the database, written atomically after the commit and stamped with the generation; a reader that
finds the stamp behind the database or a corrupt index file rebuilds it from the stored vectors.

Embeddings are tagged with the encoder that made them; adding with another encoder is refused until the memory is
re-embedded, because cosine similarities between two encoders' spaces mean nothing. Each view keeps its (downscaled)
image and box or mask, so re-embedding needs no original files.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.box import Box
from focuskit.core.episode import Support
from focuskit.core.errors import MemoryStoreError
from focuskit.core.image import ImageInput
from focuskit.core.state import FORMAT_FILE, LOCK_FILE
from focuskit.memory.catalog import check_name, concept_infos, free_color, indexed_vectors, insert_view, stored_views
from focuskit.memory.config import (
    DEFAULT_ENCODER_NAME,
    DEFAULT_ENCODER_OPTIONS,
    AugmentConfig,
    EncoderSpec,
    MemoryConfig,
    ProposerSpec,
    default_encoder_spec,
)
from focuskit.memory.curation import CurationMixin
from focuskit.memory.database import DB_FILE, FORMAT_NAME, FORMAT_VERSION, MemoryDatabase, meta_in, set_meta_in
from focuskit.memory.encoding import EncoderSlot, spec_json, spec_of
from focuskit.memory.index_cache import INDEX_FILE, SAVE_ALWAYS_MAX, IndexCache
from focuskit.memory.results import (
    AddReport,
    ConceptInfo,
    ConceptScores,
    PruneReport,
    StoredView,
    ViewConsistency,
    ViewReport,
)
from focuskit.memory.views import PreparedView, ViewPreparer
from focuskit.models.encoders import Encoder
from focuskit.models.proposals import Proposer
from focuskit.models.segmenters import Segmenter
from focuskit.search.index import FaissIndex


class ConceptMemory(CurationMixin):
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
        self._proposer_arg = proposer
        self._proposer: Proposer | None = None if isinstance(proposer, (ProposerSpec, type(None))) else proposer
        self._db = MemoryDatabase(self.directory, lock_timeout=self.config.lock_timeout, create=create)
        self._enc = EncoderSlot(encoder, self._db)
        self._cache = IndexCache(self._db, self.config.index)
        self._views = ViewPreparer(self.config, lambda: self.proposer)

    def close(self) -> None:
        """Write a pending index update (if no other writer holds the lock) and close the database."""
        with self._db.thread_lock:
            self._cache.close()
            self._db.close()

    def __enter__(self) -> ConceptMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _index(self) -> FaissIndex | None:
        """The in-memory vector index (refreshed on `match`)."""
        return self._cache.index

    def generation(self) -> int:
        """Counter incremented by every committed change (to detect changes made by other processes)."""
        return self._db.generation()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.query(sql, args)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One serialized, atomic change; the index cache follows the commit under the same lock."""
        with self._db.write(on_commit=lambda: self._cache.refresh(persist=True)) as cur:
            yield cur

    # --- encoder ------------------------------------------------------------------------------------------------
    @property
    def encoder_name(self) -> str | None:
        """Tag of the encoder the stored embeddings were made with (None while the memory is empty)."""
        return self._db.meta("encoder")

    @property
    def dim(self) -> int | None:
        return self._db.dim()

    @property
    def encoder(self) -> Encoder:
        """The encoder for this memory, built on first use from the argument, the stored spec or the default."""
        return self._enc.get()

    @property
    def proposer(self) -> Proposer:
        if self._proposer is None:
            spec = self._proposer_arg if isinstance(self._proposer_arg, ProposerSpec) else ProposerSpec()
            self._proposer = spec.create()
        return self._proposer

    # --- reading ------------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM concepts ORDER BY id")]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._query("SELECT 1 FROM concepts WHERE name = ?", (name.strip(),)))

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM concepts")[0][0])

    def list(self) -> list[ConceptInfo]:
        return concept_infos(self._db)

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
        found = stored_views(self._db, name.strip())
        if not found and name.strip() not in self:
            raise MemoryStoreError(self._unknown(name))
        return found

    def view_embeddings(self, name: str) -> tuple[np.ndarray, str]:
        """(V, C) stored embeddings of one concept (views and their mirrored/zoomed variants) and the encoder tag.

        For consumers that match against features computed elsewhere (the photo library's stored proposals), so
        they never reach into the database.
        """
        if name.strip() not in self:
            raise MemoryStoreError(self._unknown(name))
        return indexed_vectors(self._db, name.strip()), str(self.encoder_name)

    def supports(self, name: str) -> list[Support]:
        """The concept's views as localizer supports (image + box), for in-context engines."""
        return [Support(v.image, v.box) for v in self.views(name)]

    def match(self, embeddings: np.ndarray, *, top_k: int = 64) -> ConceptScores:
        """Best cosine per (query embedding, concept), over each concept's views among the `top_k` nearest vectors.

        (N, C) embeddings in -> `ConceptScores` with one column per concept that appears in any query's top-k.
        """
        return self._cache.match(embeddings, top_k)

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
        segmenter: Segmenter | None = None,
        sources: Sequence[str] | None = None,
    ) -> AddReport:
        """Add concept `name` from reference `images`, each with a box, a mask, or neither (found automatically).

        `segmenter`: views without a mask get one from their box, stored with the view (mask re-ranking at query
        time). `sources`: the label stored per view (default: the file's name, or "upload"; never a full path).

        Raises `MemoryStoreError` for a duplicate name without `replace`, an encoder mismatch, or no usable view;
        `ImageError`/`BoxError` name the view whose file or box is bad. Nothing is stored unless all goes well.
        """
        name = check_name(name)
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
                f"concept {name!r} already exists in {self.directory}: pick another name or replace it "
                "(--replace on the command line)"
            )
        encoder = self.encoder
        self._enc.check(encoder)
        prepared, reports = self._views.prepare(
            name, images, boxes, masks, encoder, progress, segmenter=segmenter, sources=sources
        )
        if not prepared:
            reasons = "; ".join(f"{r.source}: {r.reason}" for r in reports)
            raise MemoryStoreError(f"concept {name!r}: no usable view ({reasons})")
        n_vectors = sum(1 for p in prepared for variant, _ in p.vectors if not variant.startswith("mask"))
        with self._write() as cur:
            self._enc.check(encoder)
            old = cur.execute("SELECT id, color FROM concepts WHERE name = ?", (name,)).fetchone()
            if old is not None and not replace:
                raise MemoryStoreError(f"concept {name!r} already exists in {self.directory}")
            if old is not None:
                cur.execute("DELETE FROM concepts WHERE id = ?", (old[0],))
            if meta_in(cur, "encoder") is None:
                set_meta_in(cur, "encoder", encoder.name)
                set_meta_in(cur, "dim", str(encoder.dim))
                set_meta_in(cur, "encoder_spec", spec_json(self._enc.spec))
            color = int(old[1]) if old is not None else free_color(cur)
            cur.execute(
                "INSERT INTO concepts(name, context, color, created) VALUES (?, ?, ?, ?)",
                (name, context.strip(), color, time.time()),
            )
            concept_id = int(cur.lastrowid or 0)
            for pos, p in enumerate(prepared):
                self._insert_view(cur, concept_id, pos, p)
        return AddReport(name=name, views=reports, replaced=old is not None, vectors=n_vectors)

    def _insert_view(self, cur: sqlite3.Cursor, concept_id: int, position: int, p: PreparedView) -> None:
        insert_view(cur, concept_id, position, p, self._views)

    # --- editing ------------------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM concepts WHERE name = ?", (name.strip(),))
            if cur.rowcount == 0:
                raise MemoryStoreError(self._unknown(name))

    def rename(self, old: str, new: str) -> None:
        new = check_name(new)
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

    def _column(self, name: str, column: str) -> Any:
        rows = self._query(f"SELECT {column} FROM concepts WHERE name = ?", (name.strip(),))
        if not rows:
            raise MemoryStoreError(self._unknown(name))
        return rows[0][0]

    def color(self, name: str) -> int:
        return int(self._column(name, "color"))

    def context(self, name: str) -> str:
        return str(self._column(name, "context"))

    def re_embed(self, encoder: Encoder | EncoderSpec | str, *, progress: bool = True) -> int:
        """Recompute every view's vectors with `encoder` (from the stored view images) and retag the memory.

        One transaction: until it commits, the memory keeps its old embeddings. Returns the number of vectors.
        """
        spec = spec_of(encoder)
        enc = spec.create() if spec is not None else encoder
        assert not isinstance(enc, (str, EncoderSpec))
        rows = self._query("SELECT id, concept_id, x1, y1, x2, y2, image, mask FROM views ORDER BY id")
        new_vectors = self._views.embed_stored(enc, rows, progress=progress)
        with self._write() as cur:
            current = {int(r[0]) for r in cur.execute("SELECT id FROM views").fetchall()}
            if current != {int(r[0]) for r in rows}:
                raise MemoryStoreError("the memory changed during re-embedding (another writer); run it again")
            cur.execute("DELETE FROM vectors")
            cur.executemany(
                "INSERT INTO vectors(view_id, concept_id, variant, embedding) VALUES (?, ?, ?, ?)", new_vectors
            )
            set_meta_in(cur, "encoder", enc.name)
            set_meta_in(cur, "dim", str(enc.dim))
            set_meta_in(cur, "encoder_spec", spec_json(spec))
        self._enc.set(enc, spec)
        return sum(1 for v in new_vectors if not v[2].startswith("mask"))

    def verify(self) -> None:
        """Full integrity check (SQLite `quick_check`, vector sizes, index agreement); raises MemoryStoreError."""
        result = self._query("PRAGMA quick_check")
        if not result or result[0][0] != "ok":
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: {result[:3]}")
        self._cache.loaded_generation = -1
        self._cache.refresh()
        if self._index is not None and len(self._index) != len(self._cache.vector_ids):
            raise MemoryStoreError(f"concept memory {self.directory}: index and database disagree")

    def __repr__(self) -> str:
        return f"ConceptMemory({str(self.directory)!r})"


def open_memory(directory: str | Path, **kwargs: Any) -> ConceptMemory:
    """Open an existing memory (raises if there is none), for commands that only read it."""
    return ConceptMemory(directory, create=False, **kwargs)


__all__ = ["AddReport", "AugmentConfig", "ConceptInfo", "ConceptMemory", "ConceptScores", "EncoderSpec"]
__all__ += ["MemoryConfig", "ProposerSpec", "StoredView", "ViewReport", "default_encoder_spec", "open_memory"]
__all__ += ["PruneReport", "ViewConsistency"]
__all__ += ["DB_FILE", "FORMAT_FILE", "FORMAT_NAME", "FORMAT_VERSION", "INDEX_FILE", "LOCK_FILE", "SAVE_ALWAYS_MAX"]
__all__ += ["DEFAULT_ENCODER_NAME", "DEFAULT_ENCODER_OPTIONS"]
