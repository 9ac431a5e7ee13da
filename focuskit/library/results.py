"""What indexing and search return: `IndexReport` and `Hit` (dataclasses with their JSON form)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focuskit.core.box import Box


@dataclass(frozen=True)
class Hit:
    """A photo (or video frame) where the concept was found: boxes in pixels, best first, with their scores."""

    image: Path
    """Absolute path of the photo or video file."""
    root: Path
    """The library folder it was indexed under; `image` relative to it is `path`."""
    path: str
    frame: int | None
    time_s: float | None
    boxes: tuple[Box, ...]
    scores: tuple[float, ...]
    width: int
    height: int

    @property
    def score(self) -> float:
        return self.scores[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "path": self.path,
            "frame": self.frame,
            "time_s": None if self.time_s is None else round(self.time_s, 3),
            "width": self.width,
            "height": self.height,
            "score": round(self.score, 4),
            "boxes": [b.as_list() for b in self.boxes],
            "scores": [round(s, 4) for s in self.scores],
        }


@dataclass
class IndexReport:
    """What an `update` did. `failed` lists (relative path, reason) for files that could not be read."""

    root: Path
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    items: int = 0
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        return self.added + self.updated

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "items": self.items,
            "seconds": round(self.seconds, 3),
        }
