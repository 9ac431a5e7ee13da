"""Personal visual search: index a photo library once, then find any concept of a memory in it."""

from focuskit.library.index import DEFAULT_TAU, Hit, IndexReport, LibraryConfig, LibraryIndex

__all__ = ["DEFAULT_TAU", "Hit", "IndexReport", "LibraryConfig", "LibraryIndex"]
