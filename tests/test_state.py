"""SQLiteState: creating, recognising, versioning, migrating and locking a state directory; crash-safe creation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from focuskit.core.errors import MemoryStoreError
from focuskit.core.state import FORMAT_FILE, LOCK_FILE, SQLiteState

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


def state(path: Path, *, version: int = 1, migrations=None, strict: bool = True) -> SQLiteState:
    return SQLiteState(
        path,
        format_name="test-state",
        version=version,
        db_file="state.sqlite",
        schema=SCHEMA,
        what="test state",
        migrations=migrations,
        strict=strict,
        lock_timeout=5.0,
    )


def format_of(path: Path) -> dict:
    return json.loads((path / FORMAT_FILE).read_text())


def test_new_directory_gets_format_database_and_version(tmp_path: Path) -> None:
    s = state(tmp_path / "a" / "b")
    s.open()
    assert format_of(tmp_path / "a" / "b") == {"format": "test-state", "version": 1}
    with s.transaction() as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == ("1",)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state(tmp_path / "a" / "b").open(create=False)  # reopens


@pytest.mark.parametrize(
    "setup, create, expectation",
    [
        (lambda d: None, False, "no test state at"),
        (lambda d: d.mkdir(), False, "no test state at"),
        (lambda d: (d.mkdir(), (d / "photo.jpg").write_bytes(b"x")), True, "not a focuskit test state"),
        (lambda d: d.write_text("a file"), True, "is a file"),
        (lambda d: (d.mkdir(), (d / FORMAT_FILE).write_text("{not json")), True, "corrupt: cannot read FORMAT"),
        (lambda d: (d.mkdir(), (d / FORMAT_FILE).write_text('{"format": "other", "version": 1}')), True, "corrupt"),
        (
            lambda d: (d.mkdir(), (d / FORMAT_FILE).write_text('{"format": "test-state", "version": 9}')),
            True,
            r"format version 9, newer than the version 1.*upgrade focuskit",
        ),
    ],
)
def test_refusals(tmp_path: Path, setup, create: bool, expectation: str) -> None:
    setup(tmp_path / "s")
    with pytest.raises(MemoryStoreError, match=expectation):
        state(tmp_path / "s").open(create=create)


def test_leftovers_of_an_interrupted_creation_count_as_empty(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    (d / ".FORMAT.k3j4h5.tmp").write_text('{"format": "te')  # killed mid-write
    (d / LOCK_FILE).write_text("")
    with pytest.raises(MemoryStoreError, match="no test state at"):
        state(d).open(create=False)
    state(d).open()
    assert format_of(d)["format"] == "test-state"
    assert not list(d.glob(".FORMAT.*.tmp"))


def test_non_strict_state_adopts_a_directory_without_format(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    (d / "shards").mkdir()
    state(d, strict=False).open()
    assert format_of(d)["version"] == 1


def test_migrations_run_in_order_and_update_the_format_file(tmp_path: Path) -> None:
    d = tmp_path / "s"
    state(d).open()
    calls = []

    def to_v2(db) -> None:
        calls.append(2)
        db.execute("CREATE TABLE extra (x INTEGER)")

    def to_v3(db) -> None:
        calls.append(3)
        db.execute("INSERT INTO extra VALUES (3)")

    s = state(d, version=3, migrations={1: to_v2, 2: to_v3})
    s.open()
    assert calls == [2, 3] and format_of(d)["version"] == 3
    with s.transaction() as db:
        assert db.execute("SELECT x FROM extra").fetchall() == [(3,)]
    s.open()
    assert calls == [2, 3]  # nothing left to do
    with pytest.raises(MemoryStoreError, match="newer than the version 1"):
        state(d).open()


def test_a_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    d = tmp_path / "s"
    state(d).open()

    def broken(db) -> None:
        db.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        state(d, version=2, migrations={1: broken}).open()
    s = state(d, version=2, migrations={1: lambda db: db.execute("CREATE TABLE half (x INTEGER)")})
    s.open()  # the half-made table was rolled back, so the real migration can create it
    assert format_of(d)["version"] == 2


def test_lock_is_exclusive_and_says_who_waits(tmp_path: Path) -> None:
    s = state(tmp_path / "s")
    s.open()
    other = state(tmp_path / "s")
    with s.lock(), pytest.raises(MemoryStoreError, match="busy here"), other.lock(timeout=0, busy="busy here"):
        pass
    with state(tmp_path / "s").lock(timeout=0):  # released
        pass


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from focuskit.core.state import SQLiteState
    real_replace = os.replace
    def slow_replace(src, dst):
        if str(dst).endswith("FORMAT"):
            print("writing", flush=True)
            time.sleep(120)
        real_replace(src, dst)
    os.replace = slow_replace
    SQLiteState(sys.argv[1], format_name="focuskit-concept-memory", version=1, db_file="memory.sqlite",
                schema="CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
                what="concept memory").open()
    """
)


def test_killed_during_the_first_format_write_leaves_no_memory(tmp_path: Path) -> None:
    """kill -9 while the very first FORMAT write is in flight: the directory is no memory, and a new one opens."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = tmp_path / "mem"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while proc.stdout.readline().strip() != "writing":
        assert time.monotonic() < deadline and proc.poll() is None, "child never reached the FORMAT write"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert list(target.glob(".FORMAT.*.tmp")) and not (target / FORMAT_FILE).exists()
    from focuskit.memory.store import ConceptMemory, open_memory

    with pytest.raises(MemoryStoreError, match="no concept memory"):
        open_memory(target)
    with ConceptMemory(target) as mem:  # a later open creates it there
        assert mem.names() == []
    assert format_of(target) == {"format": "focuskit-concept-memory", "version": 1}


def test_config_modules_import_no_torch_and_no_faiss() -> None:
    code = (
        "import sys; import focuskit.memory.config, focuskit.search.config, focuskit.core.state; "
        "bad = [m for m in ('torch', 'faiss') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
