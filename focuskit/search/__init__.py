"""Vector search shared by the concept memory and the photo library: one `VectorIndex` protocol, FAISS behind it."""
