"""Package attributes imported on first use (PEP 562), so importing a package for its light names (configs, the
CLI's `--help`) does not pay for torch, FAISS or Pillow behind its heavy ones."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `where` maps each exported name to the module defining it.

    The first access imports that module and caches the value in the package, so later accesses are plain lookups.
    """

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
