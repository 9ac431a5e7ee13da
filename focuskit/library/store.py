"""On-disk state of a library index: SQLite for files and items, numpy shards for the proposal embeddings.

Layout of a state directory:

    FORMAT                  {"format": "focuskit-library-index", "version": 1} (see `focuskit.core.state`)
    .lock                   held by the indexing run (one at a time; `filelock`, so it works on every OS)
    library.sqlite          files (root, relative path, size, mtime, status), items (one per photo or video frame:
                            its proposal boxes and where its embeddings sit), meta (encoder tag, format version)
    shards/<uuid>.npy       float16 (rows, dim) embeddings of one indexing batch, written atomically
    vectors.index           the search index over every stored embedding (`focuskit.library.vectors`), a cache
                            rebuilt from the shards whenever its `generation` is not the database's

Why this split: the embeddings are the bulk (a 10k-photo library holds ~1M proposal vectors) and search wants them
as contiguous matrices it can memory-map and multiply, which SQLite blobs are not; everything else is small,
relational and must change atomically, which is what SQLite is for. A batch is made durable in two steps, shard file
first, then one SQLite transaction that points items at it: a crash between the two leaves an unreferenced shard
that the next open deletes, never an item pointing at missing rows. float16 halves the disk and page-cache cost and
changes cosine scores by less than 1e-3.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.errors import MemoryStoreError
from focuskit.core.io import atomic_open
from focuskit.core.state import LOCK_FILE, SQLiteState
from focuskit.library.records import FileRecord, ItemLocations, ItemRecord, ItemRow, StoredFile

__all__ = [
    "DB_NAME",
    "SHARD_DIR",
    "FileRecord",
    "ItemLocations",
    "ItemRecord",
    "ItemRow",
    "LibraryStore",
    "StoredFile",
]

FORMAT_NAME = "focuskit-library-index"
FORMAT_VERSION = 1
DB_NAME = "library.sqlite"
SHARD_DIR = "shards"
LOCK_NAME = LOCK_FILE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha1 TEXT,
    status TEXT NOT NULL,
    error TEXT,
    indexed_at REAL NOT NULL,
    UNIQUE (root, path)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    frame INTEGER,
    time_s REAL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    shard TEXT NOT NULL,
    start INTEGER NOT NULL,
    count INTEGER NOT NULL,
    boxes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_file ON items(file_id);
CREATE INDEX IF NOT EXISTS items_shard ON items(shard);
"""


def _bump(db: sqlite3.Connection, key: str) -> None:
    """Count a change in meta[key], in the caller's transaction (the vector index compares these counters)."""
    db.execute(
        "INSERT INTO meta VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1", (key,)
    )


class LibraryStore:
    """The state directory of one library index. Every method opens its own connection, so it is thread-safe."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).expanduser()
        self.shard_dir = self.state_dir / SHARD_DIR
        self.state = SQLiteState(
            self.state_dir,
            format_name=FORMAT_NAME,
            version=FORMAT_VERSION,
            db_file=DB_NAME,
            schema=_SCHEMA,
            what="library index",
            strict=False,  # version 1 state directories had no FORMAT file: adopted, and given one
            lock_timeout=30.0,
            synchronous="NORMAL",
        )
        self.db_path = self.state.db_path
        self.state.open()
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryStoreError(f"cannot create the library state directory {self.state_dir}: {exc}") from None

    # --- connections and locking --------------------------------------------------------------------------
    def connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A new connection in one transaction (WAL: readers never wait for the indexer); commits on success."""
        return self.state.transaction()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the state directory's indexing lock; a second indexer (thread or process) gets a clear error."""
        with self.state.lock(timeout=0, busy=f"another indexing run is using {self.state_dir}; wait for it to finish"):
            yield

    # --- meta ---------------------------------------------------------------------------------------------
    def get_meta(self, key: str, *, db: sqlite3.Connection | None = None) -> str | None:
        if db is None:
            with self.connect() as conn:
                return self.get_meta(key, db=conn)
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
            )

    # --- files --------------------------------------------------------------------------------------------
    def files(self, root: str | None = None) -> dict[tuple[str, str], StoredFile]:
        """Stored files keyed by (root, path), optionally only those under one root."""
        query = "SELECT id, root, path, kind, size, mtime_ns, sha1, status, error FROM files"
        args: tuple[str, ...] = ()
        if root is not None:
            query += " WHERE root = ?"
            args = (root,)
        with self.connect() as db:
            rows = db.execute(query, args).fetchall()
        return {(r[1], r[2]): StoredFile(*r) for r in rows}

    def remove_files(self, file_ids: list[int]) -> None:
        """Drop files and (by cascade) their items in one transaction."""
        if not file_ids:
            return
        with self.connect() as db:
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in file_ids])
            _bump(db, "generation")

    def touch_file(self, file_id: int, size: int, mtime_ns: int) -> None:
        """Record a new stat for a file whose content hash did not change (copied, touched, restored)."""
        with self.connect() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, file_id))

    def clear(self) -> None:
        """Forget everything (used when the encoder changes); shard files go at the next `collect_garbage`."""
        with self.connect() as db:
            db.execute("DELETE FROM items")
            db.execute("DELETE FROM files")
            _bump(db, "generation")

    # --- batches ------------------------------------------------------------------------------------------
    def write_batch(self, records: list[FileRecord]) -> None:
        """Make one batch durable: shard file first, then one transaction replacing these files' rows."""
        items = [it for rec in records for it in rec.items]
        shard = uuid.uuid4().hex
        if items:
            embeddings = np.concatenate([it.embeddings for it in items], 0).astype(np.float16)
            with atomic_open(self.shard_dir / f"{shard}.npy", "wb") as fh:
                np.save(fh, embeddings, allow_pickle=False)
        now = time.time()
        with self.connect() as db:
            _bump(db, "generation")
            start = 0
            for rec in records:
                db.execute("DELETE FROM files WHERE root = ? AND path = ?", (rec.root, rec.path))
                cur = db.execute(
                    "INSERT INTO files (root, path, kind, size, mtime_ns, sha1, status, error, indexed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec.root,
                        rec.path,
                        rec.kind,
                        rec.size,
                        rec.mtime_ns,
                        rec.sha1,
                        "failed" if rec.error else "ok",
                        rec.error,
                        now,
                    ),
                )
                file_id = cur.lastrowid
                for it in rec.items:
                    n = len(it.embeddings)
                    db.execute(
                        "INSERT INTO items (file_id, frame, time_s, width, height, shard, start, count, boxes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            file_id,
                            it.frame,
                            it.time_s,
                            it.width,
                            it.height,
                            shard,
                            start,
                            n,
                            np.asarray(it.boxes, dtype=np.float32).reshape(-1, 4).tobytes(),
                        ),
                    )
                    start += n

    # --- reading ------------------------------------------------------------------------------------------
    def items(self, *, root: str | None = None, file_path: str | None = None) -> list[ItemRow]:
        """Stored items (photos and video frames), ordered by shard then row so shards are read sequentially."""
        query = (
            "SELECT i.id, i.file_id, f.root, f.path, f.kind, i.frame, i.time_s, i.width, i.height, i.shard, i.start, "
            "i.count, i.boxes FROM items i JOIN files f ON f.id = i.file_id"
        )
        where, args = [], []
        if root is not None:
            where.append("f.root = ?")
            args.append(root)
        if file_path is not None:
            where.append("f.path = ?")
            args.append(file_path)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY i.shard, i.start"
        with self.connect() as db:
            rows = db.execute(query, args).fetchall()
        return [ItemRow(*r[:12], np.frombuffer(r[12], dtype=np.float32).reshape(-1, 4)) for r in rows]

    def items_by_id(self, item_ids: list[int]) -> list[ItemRow]:
        """The stored items with these ids, in that order (ids no longer stored are skipped)."""
        if not item_ids:
            return []
        query = (
            "SELECT i.id, i.file_id, f.root, f.path, f.kind, i.frame, i.time_s, i.width, i.height, i.shard, i.start, "
            "i.count, i.boxes FROM items i JOIN files f ON f.id = i.file_id WHERE i.id IN "
        )
        rows: dict[int, ItemRow] = {}
        with self.connect() as db:
            for lo in range(0, len(item_ids), 500):  # SQLite's bound-parameter limit
                chunk = [int(i) for i in item_ids[lo : lo + 500]]
                for r in db.execute(query + f"({','.join('?' * len(chunk))})", chunk):
                    rows[int(r[0])] = ItemRow(*r[:12], np.frombuffer(r[12], dtype=np.float32).reshape(-1, 4))
        return [rows[int(i)] for i in item_ids if int(i) in rows]

    def versions(self) -> tuple[int, int]:
        """(generation, layout): counters of content changes (items added or removed) and of shard rewrites."""
        with self.connect() as db:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'layout')").fetchall())
        return int(meta.get("generation", 0)), int(meta.get("layout", 0))

    def locations(self) -> tuple[ItemLocations, tuple[int, int]]:
        """Every item's shard rows and root, read in one transaction with the `versions` they belong to."""
        with self.connect() as db:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'layout')").fetchall())
            rows = db.execute(
                "SELECT i.id, i.shard, i.start, i.count, f.root FROM items i JOIN files f ON f.id = i.file_id "
                "ORDER BY i.id"
            ).fetchall()
        shards: dict[str, int] = {}
        roots: dict[str, int] = {}
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        shard_pos = [shards.setdefault(s, len(shards)) for s in cols[1]]
        root_pos = [roots.setdefault(r, len(roots)) for r in cols[4]]

        def ints(values: Any) -> np.ndarray:
            return np.asarray(values, dtype=np.int64).reshape(-1)

        locs = ItemLocations(
            ints(cols[0]), ints(shard_pos), ints(cols[2]), ints(cols[3]), ints(root_pos), list(shards), list(roots)
        )
        return locs, (int(meta.get("generation", 0)), int(meta.get("layout", 0)))

    def load_shard(self, shard: str) -> np.ndarray:
        """The (rows, dim) float16 embeddings of a shard, memory-mapped (the OS page cache does the caching)."""
        path = self.shard_dir / f"{shard}.npy"
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MemoryStoreError(
                f"library index shard {path} is missing or corrupt ({exc}); re-index with --reindex"
            ) from None

    def counts(self) -> dict[str, int]:
        with self.connect() as db:
            files_ok = db.execute("SELECT COUNT(*) FROM files WHERE status = 'ok'").fetchone()[0]
            failed = db.execute("SELECT COUNT(*) FROM files WHERE status = 'failed'").fetchone()[0]
            items, rows = db.execute("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM items").fetchone()
        return {"files": int(files_ok), "failed": int(failed), "items": int(items), "proposals": int(rows)}

    def roots(self) -> list[str]:
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT root FROM files ORDER BY root")]

    # --- housekeeping -------------------------------------------------------------------------------------
    def collect_garbage(
        self, *, compact_below: float = 0.5, merge_below_mb: float = 16.0, merged_mb: float = 64.0
    ) -> None:
        """Housekeeping after an indexing run, so disk use and search cost follow the library's size:

        * delete shards no item points at (left by a crash, a re-index or deleted files) and interrupted writes;
        * rewrite shards whose live rows fell below `compact_below` of their size (deleted or changed files);
        * merge shards under `merge_below_mb` into shards of up to `merged_mb`, because every indexing batch writes
          one small shard and a search pays a fixed cost per shard file (merging holds one merged shard in RAM).
        """
        with self.connect() as db:
            live = {str(k): int(v) for k, v in db.execute("SELECT shard, SUM(count) FROM items GROUP BY shard")}
        for path in self.shard_dir.glob("*.npy"):
            if path.stem not in live:
                path.unlink(missing_ok=True)
        for path in self.shard_dir.glob(".*.tmp"):  # an atomic write interrupted by a kill
            path.unlink(missing_ok=True)
        shapes = {shard: self.load_shard(shard).shape for shard in live}
        sizes = {shard: shape[0] for shard, shape in shapes.items()}
        row_bytes = 2 * max((shape[1] for shape in shapes.values()), default=1)
        merge_below = int(merge_below_mb * 1e6 / row_bytes)
        merged_rows = int(merged_mb * 1e6 / row_bytes)
        small: list[str] = []
        for shard in sorted(live):
            if live[shard] < compact_below * sizes[shard] or sizes[shard] < merge_below:
                small.append(shard)
        if len(small) == 1 and live[small[0]] >= compact_below * sizes[small[0]]:
            return  # one small, dense shard: nothing to gain
        group: list[str] = []
        rows = 0
        for shard in small:
            if group and rows + live[shard] > merged_rows:
                self._rewrite(group)
                group, rows = [], 0
            group.append(shard)
            rows += live[shard]
        if len(group) > 1 or (group and live[group[0]] < compact_below * sizes[group[0]]):
            self._rewrite(group)

    def _rewrite(self, shards: list[str]) -> None:
        """Copy the live rows of `shards` into one new shard and repoint their items, in one transaction."""
        new = uuid.uuid4().hex
        marks = ",".join("?" * len(shards))
        with self.connect() as db:
            rows = db.execute(
                f"SELECT id, shard, start, count FROM items WHERE shard IN ({marks}) ORDER BY shard, start", shards
            ).fetchall()
            arrays = {shard: self.load_shard(shard) for shard in shards}
            parts, updates, start = [], [], 0
            for item_id, shard, s, n in rows:
                parts.append(np.asarray(arrays[shard][s : s + n]))
                updates.append((new, start, item_id))
                start += n
            if parts:
                with atomic_open(self.shard_dir / f"{new}.npy", "wb") as fh:
                    np.save(fh, np.concatenate(parts, 0), allow_pickle=False)
            db.executemany("UPDATE items SET shard = ?, start = ? WHERE id = ?", updates)
            _bump(db, "layout")
        for shard in shards:
            (self.shard_dir / f"{shard}.npy").unlink(missing_ok=True)
