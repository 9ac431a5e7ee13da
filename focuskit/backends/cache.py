"""A persistent answer cache: `CachedBackend` wraps any `VLMBackend` and remembers its answers on disk.

The key is (backend name, which names the model and endpoint; the prompt; the generation options; the video
flag; a SHA-256 of every image's pixels), so the same question on the same pixels is asked once, across runs and
processes. An evaluation rerun with another judge therefore costs no new answers. The store is one SQLite file
(`KeyValueCache`), written one committed row at a time: an interrupted run keeps every answer it got.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.core.errors import ConfigError


def image_digest(image: Image.Image) -> str:
    """SHA-256 of an image's mode, size and pixels (not of a file: the same pixels hash the same however saved)."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class KeyValueCache:
    """String keys -> JSON values in one SQLite table; safe to share between threads and processes."""

    def __init__(self, path: str | Path, table: str = "answers") -> None:
        if not table.isidentifier():
            raise ConfigError(f"cache table name must be an identifier, got {table!r}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"cache path {self.path} exists and is not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot use {self.path} as a cache ({exc}); delete it or pick another path") from None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute(f"SELECT value FROM {self.table} WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {self.table} (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend:
    """`backend` with its answers remembered in `cache`; same protocol, so it goes wherever a backend goes."""

    def __init__(self, backend: VLMBackend, cache: KeyValueCache) -> None:
        self.backend = backend
        self.cache = cache
        self.name = backend.name
        self.supports_video = backend.supports_video
        self.hits = 0
        """Answers served from the cache by this wrapper (the cache's own counters also count other users)."""
        self.misses = 0

    def key(self, images: Sequence[Image.Image], prompt: str, options: GenerationOptions, video: bool) -> str:
        parts = {
            "model": self.backend.name, "prompt": prompt, "max_new_tokens": options.max_new_tokens,
            "temperature": options.temperature, "video": video, "images": [image_digest(im) for im in images],
        }  # fmt: skip
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def generate(
        self,
        images: Sequence[Image.Image],
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        video: bool = False,
    ) -> str:
        opts = options or GenerationOptions()
        key = self.key(images, prompt, opts, video)
        hit = self.cache.get(key)
        if isinstance(hit, str):
            self.hits += 1
            return hit
        self.misses += 1
        text = self.backend.generate(images, prompt, options=opts, video=video)
        self.cache.put(key, text)
        return text
