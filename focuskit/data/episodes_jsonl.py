"""focuskit's episode JSONL format, and IPLoc's episode JSON files.

JSONL, one episode a line, paths relative to the file:
    {"id": "cup-0", "supports": [{"image": "a.jpg", "box": [x1, y1, x2, y2]}, ...],
     "query": {"image": "q.jpg", "box": [x1, y1, x2, y2] | null}, "meta": {...}}

IPLoc (a JSON list, one file per episode or a list of such lists): entries
    {"element": "<category>", "image_path": [...], "bbox": ["[x1, y1, x2, y2]", ...]}
where the last image/box pair is the query. The category name is ignored: focuskit never uses it.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import BoxError, DatasetError
from focuskit.core.io import atomic_open, iter_text_lines, parse_json, read_text

WHERE_ATTR = "_where"
"""Attribute set on each episode read here: 'file:line (episode id)', for error messages (`episode_origin`). Not a
dataclass field, so it is neither compared nor written back out."""


def _mark(episode: Episode, where: str) -> Episode:
    object.__setattr__(episode, WHERE_ATTR, where)
    return episode


def episode_origin(episode: Episode) -> str:
    """Where an episode was read ('file:line (episode id)'), or just its id when it was built in code."""
    return getattr(episode, WHERE_ATTR, None) or f"episode {episode.id!r}"


def _resolve(base: Path, image: Any, where: str) -> Path:
    if not isinstance(image, str) or not image:
        raise DatasetError(f"{where}: 'image' must be a non-empty path string, got {image!r}")
    p = Path(image)
    return p if p.is_absolute() else base / p


def _box(value: Any, where: str) -> Box:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise DatasetError(f"{where}: 'box' must be [x1, y1, x2, y2], got {value!r}")
    try:
        return Box.from_xyxy([float(v) for v in value]).validate(where=where)
    except (TypeError, ValueError, OverflowError, BoxError) as exc:
        raise DatasetError(f"{where}: {exc}") from None


def episode_from_record(record: Any, base: Path, where: str) -> Episode:
    """Build an `Episode` from one parsed JSONL record; `where` names the file and line in errors."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("supports", "query"):
        if key not in record:
            raise DatasetError(f"{where}: missing key {key!r}")
    supports_raw = record["supports"]
    if not isinstance(supports_raw, list) or not supports_raw:
        raise DatasetError(f"{where}: 'supports' must be a non-empty list (k >= 1)")
    supports = []
    for i, s in enumerate(supports_raw):
        w = f"{where}, support {i + 1}"
        if not isinstance(s, dict) or "image" not in s or "box" not in s:
            raise DatasetError(f"{w}: expected {{'image': ..., 'box': [x1, y1, x2, y2]}}, got {s!r}")
        supports.append(Support(_resolve(base, s["image"], w), _box(s["box"], w)))
    q = record["query"]
    if not isinstance(q, dict) or "image" not in q:
        raise DatasetError(f"{where}, query: expected {{'image': ..., 'box': [...] | null}}, got {q!r}")
    qbox = None if q.get("box") is None else _box(q["box"], f"{where}, query")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: 'meta' must be an object, got {meta!r}")
    episode = Episode(
        id=str(record.get("id", where)),
        supports=tuple(supports),
        query_image=_resolve(base, q["image"], f"{where}, query"),
        query_box=qbox,
        meta=meta,
    )
    return _mark(episode, where)


def iter_jsonl_episodes(path: Path) -> Iterator[Episode]:
    base = path.parent
    for lineno, line in iter_text_lines(path, what="episode file"):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        record = parse_json(line, where=where)
        if isinstance(record, dict):
            if "id" not in record:
                record["id"] = f"{path.stem}-{lineno}"
            where = f"{where} (episode {str(record['id'])[:80]!r})"
        yield episode_from_record(record, base, where)


def _iploc_bbox(value: Any, where: str) -> Box:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip()[:1000])
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            raise DatasetError(f"{where}: bbox {value!r} is not a list of four numbers") from None
    return _box(value, where)


def iploc_episode(entries: Any, base: Path, episode_id: str, where: str) -> Episode:
    """One IPLoc episode: image/box pairs in order, the last pair is the query."""
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise DatasetError(f"{where}: an IPLoc episode is a list of entries, got {type(entries).__name__}")
    images: list[Any] = []
    boxes: list[Any] = []
    for e in entries:
        if not isinstance(e, dict):
            raise DatasetError(
                f"{where}: IPLoc entries are objects with 'image_path' and 'bbox', got {type(e).__name__} "
                f"{json.dumps(e)[:60]}"
            )
        if "image_path" not in e or "bbox" not in e:
            raise DatasetError(f"{where}: IPLoc entries need 'image_path' and 'bbox', got keys {sorted(e)!r}")
        ips = e["image_path"] if isinstance(e["image_path"], list) else [e["image_path"]]
        bbs = e["bbox"] if isinstance(e["bbox"], list) and not _is_flat_box(e["bbox"]) else [e["bbox"]]
        if len(ips) != len(bbs):
            raise DatasetError(f"{where}: {len(ips)} image paths but {len(bbs)} boxes")
        images.extend(ips)
        boxes.extend(bbs)
    if len(images) < 2:
        raise DatasetError(
            f"{where}: an IPLoc episode needs at least one support and a query, got {len(images)} images"
        )
    supports = tuple(
        Support(_resolve(base, img, where), _iploc_bbox(b, f"{where}, image {i + 1}"))
        for i, (img, b) in enumerate(zip(images[:-1], boxes[:-1], strict=True))
    )
    episode = Episode(
        id=episode_id,
        supports=supports,
        query_image=_resolve(base, images[-1], where),
        query_box=_iploc_bbox(boxes[-1], f"{where}, query"),
        meta={"source": "iploc"},
    )
    return _mark(episode, f"{where} (episode {episode_id!r})")


def _is_flat_box(value: list[Any]) -> bool:
    return len(value) == 4 and all(isinstance(v, (int, float)) for v in value)


def iter_iploc_episodes(path: Path) -> Iterator[Episode]:
    data = parse_json(read_text(path, what="IPLoc episode file"), where=str(path))
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: an IPLoc file is a non-empty JSON list of entries")
    # A file is either one episode (list of entry dicts) or many (list of lists).
    if all(isinstance(x, list) for x in data):
        for i, ep in enumerate(data):
            yield iploc_episode(ep, path.parent, f"{path.stem}-{i}", f"{path} episode {i}")
    else:
        yield iploc_episode(data, path.parent, path.stem, str(path))


def load_episodes(path: str | Path) -> list[Episode]:
    """Read episodes from a `.jsonl` file, an IPLoc `.json` file, or a directory of IPLoc `.json` files."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"episode file not found: {path}")
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise DatasetError(f"{path} is a directory with no IPLoc *.json episode files")
        return [ep for f in files for ep in iter_iploc_episodes(f)]
    if path.suffix == ".json":
        return list(iter_iploc_episodes(path))
    episodes = list(iter_jsonl_episodes(path))
    if not episodes:
        raise DatasetError(f"{path} contains no episodes")
    return episodes


def _rel(p: Any, base: Path) -> str:
    if not isinstance(p, (str, Path)):
        raise DatasetError("only episodes whose images are files can be written to JSONL")
    return os.path.relpath(Path(p).resolve(), base.resolve())


def episode_to_record(episode: Episode, base: Path) -> dict[str, Any]:
    return {
        "id": episode.id,
        "supports": [{"image": _rel(s.image, base), "box": s.box.as_list()} for s in episode.supports],
        "query": {
            "image": _rel(episode.query_image, base),
            "box": None if episode.query_box is None else episode.query_box.as_list(),
        },
        **({"meta": episode.meta} if episode.meta else {}),
    }


def write_episodes(episodes: Iterable[Episode], path: str | Path) -> int:
    """Write episodes as JSONL with image paths relative to the file; atomic. Returns the count."""
    path = Path(path)
    n = 0
    with atomic_open(path, "w") as fh:
        for ep in episodes:
            fh.write(json.dumps(episode_to_record(ep, path.parent)) + "\n")
            n += 1
    return n
