"""`SQLiteState`: one directory holding a SQLite database, its FORMAT file and a writer lock.

The concept memory and the library index are both "a directory of state with SQLite as the source of truth"; this
module is the one place that knows how such a directory is created, recognised, versioned, locked and opened.

Layout::

    FORMAT        {"format": <name>, "version": <int>}: what the directory is; a newer version is refused
    <db file>     the SQLite database (WAL mode); meta table with `format_version`
    .lock         a `filelock` lock serialising writers across processes (works on Linux, macOS and Windows)

Creation is crash safe: the FORMAT file is written atomically (temporary file, fsync, rename), so a process killed
during the very first write leaves a directory holding nothing but an interrupted temporary file (and maybe the lock
file). Such a directory counts as empty: the next open creates the state there, and a read-only open says there is
none. A crash therefore leaves either no state or a valid one, never a directory that every later open refuses.

Migrations: `migrations[v]` upgrades a database from version v to v + 1. They run at open, under the lock, each in
one transaction with the version bump, so a crash mid-migration leaves the previous version.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import filelock

from focuskit.core.errors import FocusError, MemoryStoreError
from focuskit.core.io import atomic_write_json

FORMAT_FILE = "FORMAT"
LOCK_FILE = ".lock"
_LEFTOVER = re.compile(r"^\.FORMAT\..*\.tmp$")
"""An interrupted atomic write of the FORMAT file (see `focuskit.core.io.atomic_open`)."""

Migration = Callable[[sqlite3.Connection], None]


class SQLiteState:
    """A state directory: `directory/FORMAT`, `directory/db_file`, `directory/.lock`.

    `what` names the state in messages ("concept memory"). `strict` refuses a non-empty directory without a FORMAT
    file (a user pointing the memory at their photo folder); without it such a directory is adopted, which suits a
    state directory that predates FORMAT files (the library index's first version). `error` is the `FocusError`
    subclass raised for every problem.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        format_name: str,
        version: int,
        db_file: str,
        schema: str,
        what: str,
        migrations: Mapping[int, Migration] | None = None,
        strict: bool = True,
        lock_timeout: float = 120.0,
        synchronous: str = "FULL",
        error: type[FocusError] = MemoryStoreError,
    ) -> None:
        self.directory = Path(directory)
        self.format_name = format_name
        self.version = version
        self.db_path = self.directory / db_file
        self.schema = schema
        self.what = what
        self.migrations = dict(migrations or {})
        self.strict = strict
        self.lock_timeout = lock_timeout
        self.synchronous = synchronous
        self.error = error

    # --- opening ------------------------------------------------------------------------------------------------
    def open(self, *, create: bool = True) -> None:
        """Create or recognise the directory, check its version, create the schema, run pending migrations.

        Opening an existing, current state takes no lock (readers never wait for a writer); creating one or migrating
        it does.
        """
        self._prepare_directory(create)
        fresh = False
        if (self.directory / FORMAT_FILE).is_file():
            self._check_format(self.directory / FORMAT_FILE)
        else:
            with self.lock():
                fresh = self._write_format_if_new(create)
        db = self.connect()
        try:
            db.executescript(self.schema)  # IF NOT EXISTS statements: idempotent
            initial = self.version if fresh or not self.migrations else 1
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', ?)", (str(initial),))
            stored = self._db_version(db)
            if stored < self.version:
                with self.lock():
                    self._migrate(db)
            if not (self.directory / FORMAT_FILE).is_file():
                with self.lock():
                    self._write_format()
        except sqlite3.DatabaseError as exc:
            raise self.error(f"{self.what} {self.directory} is corrupt: {self.db_path} ({exc})") from None
        finally:
            db.close()

    def _db_version(self, db: sqlite3.Connection) -> int:
        raw = get_meta(db, "format_version")
        try:
            version = int(raw) if raw is not None else 1
        except ValueError:
            raise self.error(f"{self.what} {self.directory} is corrupt: format_version {raw!r}") from None
        self._check_version(version, str(self.db_path))
        return version

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Under the lock: upgrade one version at a time, each step one transaction with its version bump."""
        for v in range(self._db_version(db), self.version):
            if v not in self.migrations:
                raise self.error(f"{self.what} {self.directory}: no migration from format version {v}")
            with self.transaction(db, immediate=True):
                self.migrations[v](db)
                set_meta(db, "format_version", str(v + 1))
        self._write_format()

    def _prepare_directory(self, create: bool) -> None:
        d = self.directory
        if d.exists() and not d.is_dir():
            raise self.error(f"{self.what} path {d} is a file, expected a directory")
        if not d.exists() or self._is_empty():
            if not create:
                raise self.error(f"no {self.what} at {d}")
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self.error(f"cannot create the {self.what} directory {d}: {exc}") from None
            return
        if not (d / FORMAT_FILE).is_file() and self.strict:
            raise self.error(
                f"{d} is not empty and has no {FORMAT_FILE} file: it is not a focuskit {self.what} "
                "(use a new or empty directory)"
            )

    def _is_empty(self) -> bool:
        """No entries but leftovers of an interrupted creation (a FORMAT temporary file, the lock file)."""
        return all(p.name == LOCK_FILE or _LEFTOVER.match(p.name) for p in self.directory.iterdir())

    def _write_format_if_new(self, create: bool) -> bool:
        """Under the lock: read FORMAT, or write it for a new directory. True when the state is new."""
        path = self.directory / FORMAT_FILE
        if path.is_file():
            self._check_format(path)
            return False
        if self._is_empty():
            if not create:
                raise self.error(f"no {self.what} at {self.directory}")
            for leftover in self.directory.iterdir():
                if _LEFTOVER.match(leftover.name):
                    leftover.unlink(missing_ok=True)
            self._write_format()
            return True
        if self.db_path.is_file() or not self.strict:
            return not self.db_path.is_file()  # adopted: FORMAT is written after the version check
        raise self.error(f"{self.directory} has no {FORMAT_FILE} file: it is not a focuskit {self.what}")

    def _write_format(self) -> None:
        atomic_write_json(self.directory / FORMAT_FILE, {"format": self.format_name, "version": self.version})

    def _check_format(self, path: Path) -> None:
        try:
            fmt = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise self.error(f"{self.what} {self.directory} is corrupt: cannot read {FORMAT_FILE} ({exc})") from None
        if (
            not isinstance(fmt, dict)
            or fmt.get("format") != self.format_name
            or not isinstance(fmt.get("version"), int)
        ):
            raise self.error(f"{self.what} {self.directory} is corrupt: {FORMAT_FILE} holds {fmt!r}")
        self._check_version(int(fmt["version"]), str(path))

    def _check_version(self, version: int, where: str) -> None:
        if version > self.version:
            raise self.error(
                f"{self.what} {self.directory} has format version {version}, newer than the version "
                f"{self.version} this focuskit reads ({where}): upgrade focuskit"
            )

    # --- connections --------------------------------------------------------------------------------------------
    def connect(self, *, timeout: float | None = None, check_same_thread: bool = True) -> sqlite3.Connection:
        """A new autocommit connection (transactions are explicit) in WAL mode with foreign keys on."""
        try:
            db = sqlite3.connect(
                self.db_path,
                timeout=self.lock_timeout if timeout is None else timeout,
                isolation_level=None,
                check_same_thread=check_same_thread,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise self.error(f"{self.what} {self.directory} is corrupt: {self.db_path} ({exc})") from None
        return db

    @contextlib.contextmanager
    def transaction(
        self, db: sqlite3.Connection | None = None, *, immediate: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A transaction on `db` (or a new connection, closed after): commits on success, rolls back on error."""
        own = db is None
        conn = self.connect() if db is None else db
        try:
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if own:
                conn.close()

    # --- locking ------------------------------------------------------------------------------------------------
    def file_lock(self) -> filelock.FileLock:
        """The directory's writer lock (reentrant per object and thread; a fresh object per independent holder)."""
        return filelock.FileLock(str(self.directory / LOCK_FILE), timeout=self.lock_timeout)

    @contextlib.contextmanager
    def lock(self, *, timeout: float | None = None, busy: str | None = None) -> Iterator[None]:
        """Hold the writer lock; waits up to `timeout` seconds (default `lock_timeout`), then raises `busy`."""
        lock = self.file_lock()
        wait = self.lock_timeout if timeout is None else timeout
        try:
            lock.acquire(timeout=wait)
        except filelock.Timeout:
            raise self.error(
                busy
                or f"{self.what} {self.directory} is locked by another writer for over {wait:.0f} s "
                f"({self.directory / LOCK_FILE})"
            ) from None
        try:
            yield
        finally:
            lock.release()


def get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


__all__ = ["FORMAT_FILE", "LOCK_FILE", "Migration", "SQLiteState", "get_meta", "set_meta"]
