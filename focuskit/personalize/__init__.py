"""PeKit: training-free personalization. Find the user's concepts, prompt a VLM visually, answer by name.

Names are imported on first use (PEP 562), so `import focuskit.personalize.config` stays light (no torch, FAISS,
PyAV or httpx): the CLI reads and checks its config before any model is loaded.
"""

from __future__ import annotations

from focuskit.core.lazy import lazy_attributes

_WHERE = {
    "DEFAULT_TAU": "focuskit.personalize.detector",
    "ConceptDetector": "focuskit.personalize.detector",
    "Detector": "focuskit.personalize.detector",
    "DetectorConfig": "focuskit.personalize.config",
    "LocalizerDetector": "focuskit.personalize.detector",
}


__getattr__ = lazy_attributes(__name__, _WHERE)


__all__ = sorted(_WHERE)
