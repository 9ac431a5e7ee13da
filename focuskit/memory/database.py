"""The concept memory's SQLite database: schema, one long-lived connection, serialized writes, generations.

SQLite is the source of truth: every change (add, replace, rename, remove, re-embed) is one transaction that also
increments a `generation` counter, so a process killed mid-add leaves either the old or the new state, never a
half-added concept, and other processes see that something changed by reading one number. Writers hold the
directory's file lock (`SQLiteState`), so concurrent writers (CLI, server workers) are serialized; readers never
block.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from focuskit.core.errors import MemoryStoreError
from focuskit.core.state import LOCK_FILE, SQLiteState

FORMAT_NAME = "focuskit-concept-memory"
FORMAT_VERSION = 1
DB_FILE = "memory.sqlite"

SCHEMA = """
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
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0');
"""


class MemoryDatabase:
    """One connection to `directory/memory.sqlite`, shared by the threads of a process under a re-entrant lock."""

    def __init__(self, directory: Path, *, lock_timeout: float, create: bool) -> None:
        self.directory = directory
        self.lock_timeout = lock_timeout
        self.state = SQLiteState(
            directory,
            format_name=FORMAT_NAME,
            version=FORMAT_VERSION,
            db_file=DB_FILE,
            schema=SCHEMA,
            what="concept memory",
            lock_timeout=lock_timeout,
        )
        self.state.open(create=create)
        self.thread_lock = threading.RLock()
        self.file_lock = self.state.file_lock()
        self._db = self.state.connect(check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    # --- reading ------------------------------------------------------------------------------------------------
    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.thread_lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt or unreadable ({exc})") from None

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def generation(self) -> int:
        """Counter incremented by every committed change (to detect changes made by other processes)."""
        value = self.meta("generation")
        try:
            return int(value) if value is not None else 0
        except ValueError:
            raise MemoryStoreError(f"concept memory {self.directory} is corrupt: generation {value!r}") from None

    def dim(self) -> int | None:
        value = self.meta("dim")
        return int(value) if value else None

    def vector(self, blob: bytes, vid: int, dim: int | None) -> np.ndarray:
        vec = np.frombuffer(blob, dtype=np.float32)
        if len(vec) != dim:
            raise MemoryStoreError(
                f"concept memory {self.directory} is corrupt: vector {vid} has {len(vec)} values, expected {dim}"
            )
        return vec

    def vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """(N, dim) stored embeddings of vector `ids`, in that order (the exact re-ranking source of the index)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(ids, return_inverse=True)
        got = np.empty((len(uniq), dim), dtype=np.float32)
        seen = np.zeros(len(uniq), dtype=bool)
        for start in range(0, len(uniq), 900):  # SQLite's default limit on bound parameters is 999
            chunk = [int(i) for i in uniq[start : start + 900]]
            rows = self.query(f"SELECT id, embedding FROM vectors WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            if not rows:
                continue
            where = np.searchsorted(uniq, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            blob = b"".join(r[1] for r in rows)
            if len(blob) != 4 * dim * len(rows):
                bad = next(r[0] for r in rows if len(r[1]) != 4 * dim)
                self.vector(next(r[1] for r in rows if r[0] == bad), bad, dim)  # raises, naming the vector
            got[where] = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim)
            seen[where] = True
        if not seen.all():
            raise MemoryStoreError(
                f"concept memory {self.directory}: vectors {uniq[~seen][:5].tolist()} are not stored (changed "
                "during the search?)"
            )
        return got[inverse.reshape(-1)]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction, so rows read together come from one committed state."""
        with self.thread_lock:
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

    # --- writing ------------------------------------------------------------------------------------------------
    @contextmanager
    def write(self, on_commit: Callable[[], None] | None = None) -> Iterator[sqlite3.Cursor]:
        """One serialized, atomic change: file lock, then a transaction that also bumps the generation.

        `on_commit` runs after the commit, still under the lock (the index cache writes its file there).
        """
        with self.thread_lock:
            try:
                self.file_lock.acquire()
            except filelock.Timeout:
                raise MemoryStoreError(
                    f"concept memory {self.directory} is locked by another writer for over "
                    f"{self.lock_timeout:.0f} s ({self.directory / LOCK_FILE})"
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
                if on_commit is not None:
                    on_commit()
            except sqlite3.DatabaseError as exc:
                raise MemoryStoreError(f"concept memory {self.directory} is corrupt or unwritable ({exc})") from None
            finally:
                self.file_lock.release()

    def try_lock(self) -> bool:
        try:
            self.file_lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        return True

    def unlock(self) -> None:
        self.file_lock.release()


def meta_in(cur: sqlite3.Cursor, key: str) -> str | None:
    row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta_in(cur: sqlite3.Cursor, key: str, value: str) -> None:
    cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


__all__ = ["DB_FILE", "FORMAT_NAME", "FORMAT_VERSION", "SCHEMA", "MemoryDatabase", "meta_in", "set_meta_in"]
