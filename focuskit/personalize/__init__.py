"""PeKit: training-free personalization. Find the user's concepts, prompt a VLM visually, answer by name.

Names are imported on first use (PEP 562), so `import focuskit.personalize.config` stays light (no torch, FAISS,
PyAV or httpx): the CLI reads and checks its config before any model is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEFAULT_TAU": "focuskit.personalize.detector",
    "ConceptDetector": "focuskit.personalize.detector",
    "Detector": "focuskit.personalize.detector",
    "DetectorConfig": "focuskit.personalize.config",
    "LocalizerDetector": "focuskit.personalize.detector",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'focuskit.personalize' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = sorted(_WHERE)
