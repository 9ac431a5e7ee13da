"""Where focuskit keeps files it can rebuild (exported models, demo data): one folder, overridable for tests and CI.

Order: `$FOCUSKIT_CACHE_DIR` (used as is), else `$XDG_CACHE_HOME/focuskit`, else `~/.cache/focuskit`. Nothing in it is
precious: deleting it costs a rebuild on next use, never a result.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "FOCUSKIT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "focuskit"


def write_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `target`, then rename it over `target`.

    Readers see the old file or the complete new one, never a half-written one, and two processes building the same
    file at once each rename a complete copy. A failing `write` leaves no temporary file behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp makes it 0600; a cache file is no secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
