"""Persistent concept memory: named concepts, their reference views and embeddings, over a vector index.

Names are imported on first use (PEP 562), so `import focuskit.memory.config` stays light: no torch, no FAISS.
"""

from __future__ import annotations

from focuskit.core.lazy import lazy_attributes

_WHERE = {
    "FaissIndex": "focuskit.search.index",
    "VectorIndex": "focuskit.search.index",
    "IndexConfig": "focuskit.search.config",
    "AugmentConfig": "focuskit.memory.config",
    "EncoderSpec": "focuskit.memory.config",
    "MemoryConfig": "focuskit.memory.config",
    "ProposerSpec": "focuskit.memory.config",
    "AddReport": "focuskit.memory.results",
    "ConceptInfo": "focuskit.memory.results",
    "ConceptScores": "focuskit.memory.results",
    "StoredView": "focuskit.memory.results",
    "PruneReport": "focuskit.memory.results",
    "ViewConsistency": "focuskit.memory.results",
    "ViewReport": "focuskit.memory.results",
    "ConceptMemory": "focuskit.memory.store",
    "open_memory": "focuskit.memory.store",
}


__getattr__ = lazy_attributes(__name__, _WHERE)


__all__ = sorted(_WHERE)
