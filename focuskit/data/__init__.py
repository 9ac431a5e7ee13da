"""Readers and writers of on-disk formats, each yielding `Episode`s or concept sets."""
