"""Persistent concept memory: named concepts, their reference views and embeddings, over a vector index."""

from focuskit.memory.index import FaissIndex, IndexConfig, VectorIndex
from focuskit.memory.store import (
    AddReport,
    AugmentConfig,
    ConceptInfo,
    ConceptMemory,
    ConceptScores,
    EncoderSpec,
    MemoryConfig,
    ProposerSpec,
    StoredView,
    ViewReport,
    open_memory,
)

__all__ = [
    "AddReport",
    "AugmentConfig",
    "ConceptInfo",
    "ConceptMemory",
    "ConceptScores",
    "EncoderSpec",
    "FaissIndex",
    "IndexConfig",
    "MemoryConfig",
    "ProposerSpec",
    "StoredView",
    "VectorIndex",
    "ViewReport",
    "open_memory",
]
