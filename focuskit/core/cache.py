"""Where focuskit keeps files it can rebuild (exported models, demo data): one folder, overridable for tests and CI.

Order: `$FOCUSKIT_CACHE_DIR` (used as is), else `$XDG_CACHE_HOME/focuskit`, else `~/.cache/focuskit`. Nothing in it is
precious: deleting it costs a rebuild on next use, never a result.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FOCUSKIT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "focuskit"
