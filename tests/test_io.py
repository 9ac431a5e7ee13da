from __future__ import annotations

import os
from pathlib import Path

import pytest

from focuskit.core import io as io_module
from focuskit.core.io import atomic_open, atomic_write_json, atomic_write_text


def test_crash_mid_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"v": 2, "half')
        raise RuntimeError("crash")
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert list(tmp_path.iterdir()) == [target]  # no temporary left behind


def test_creates_parent(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "b.txt", "hi")
    assert (tmp_path / "a" / "b.txt").read_text() == "hi"


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path: Path) -> None:
    old = os.umask(0o022)
    io_module._umask.cache_clear()  # the umask is read once per process; this test sets its own
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        (tmp_path / "new.txt").chmod(0o640)
        atomic_write_text(tmp_path / "new.txt", "y")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
        io_module._umask.cache_clear()
