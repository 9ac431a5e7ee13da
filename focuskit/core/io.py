"""Atomic file writes: a crash mid-write leaves the previous file, never a half-written one."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from focuskit.core.errors import ConfigError, DatasetError


@functools.cache
def _umask() -> int:
    """Read once: reading the umask means setting it, which must not race with other threads creating files."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, fsync, then rename over it (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (the existing file's, or the umask's),
        # so results written on a shared machine stay readable by the team.
        os.fchmod(fd, _target_mode(path))
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_with(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path`; for writers that want a
    file name rather than a file object (an exporter, a library's `save(filename)`).

    Readers see the old file or the complete new one, and two processes building the same file at once each rename
    a complete copy. A failing `write` leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(_target_mode(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def figure_png(fig: Any, *, dpi: float | None = None) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed (open figures pile up in pyplot's registry)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def atomic_write_figure(path: str | Path, fig: Any, *, dpi: float | None = None) -> Path:
    """Save a matplotlib figure as a PNG file atomically (`figure_png`, then `atomic_write_bytes`)."""
    atomic_write_bytes(path, figure_png(fig, dpi=dpi))
    return Path(path)


# --- output paths, checked before the work starts ----------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def _writable_folder(folder: Path, *, option: str, target: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{option} {target}: {folder} is a file, not a folder, so nothing can be written under it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {target}: the folder {folder} is not writable")
    # os.access says yes to root everywhere; a read-only mount or /proc still refuses: try for real.
    try:
        fd, probe = tempfile.mkstemp(prefix=".focuskit-write-check.", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{option} {target}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, *, option: str) -> Path:
    """Refuse, before any work, an output file path that could not be written (a `ConfigError` naming `option`):
    an existing folder, a path under a file (`FILE/x.json`), or a folder we may not write in. Creates nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    _writable_folder(_nearest_existing(parent), option=option, target=path)
    return path


def check_output_dir(path: str | Path, *, option: str) -> Path:
    """Refuse, before any work, an output folder that could not be created or written (`ConfigError`)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file: give a folder")
    _writable_folder(_nearest_existing(path), option=option, target=path)
    return path


# --- reading user files: every decoding and parsing failure becomes a DatasetError naming the place ----------
def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None


def read_text(path: str | Path, *, what: str = "file") -> str:
    """The UTF-8 text of `path`; a `DatasetError` naming it when it is missing, a folder, unreadable or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DatasetError(f"{what} {path} is a folder, expected a file") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return _decode(data, str(path))


def iter_text_lines(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, str]]:
    """(line number from 1, text) for each line of a UTF-8 file; a bad byte is reported with its line."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DatasetError(f"{what} {path} is a folder, expected a file") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            yield lineno, _decode(raw, f"{path}:{lineno}")


def parse_json(text: str, *, where: str) -> Any:
    """`json.loads` whose every failure is a `DatasetError` at `where`: syntax, an integer too long to convert
    (Python's int max-str-digits limit), nesting too deep to parse (RecursionError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise DatasetError(f"{where}: JSON nested too deeply to read") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise DatasetError(f"{where}: unreadable JSON value ({exc})") from None
