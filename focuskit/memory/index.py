"""The concept memory's vector index: re-exported from `focuskit.search.index`, shared with the photo library."""

from focuskit.search.index import INDEX_FORMAT_VERSION, FaissIndex, IndexConfig, VectorIndex

__all__ = ["INDEX_FORMAT_VERSION", "FaissIndex", "IndexConfig", "VectorIndex"]
