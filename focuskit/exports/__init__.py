"""Write batch detection results in the formats people import: JSONL, CSV, COCO JSON and FiftyOne JSON.

One module per format; `write_detections(results, path)` picks the format from the suffix (`.jsonl`, `.csv`,
`.json` = COCO) or `format=`. Every writer takes the same `ImageResult`s (an image, its size, its `Detections` and
optionally the best score per concept even below the threshold) and writes atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from focuskit.core.errors import ConfigError
from focuskit.exports.coco import to_coco, write_coco
from focuskit.exports.csv import write_csv
from focuskit.exports.fiftyone import write_fiftyone
from focuskit.exports.jsonl import jsonl_record, write_jsonl
from focuskit.exports.records import ImageResult, concept_list

__all__ = [
    "FORMATS",
    "ImageResult",
    "concept_list",
    "format_for",
    "jsonl_record",
    "to_coco",
    "write_coco",
    "write_csv",
    "write_detections",
    "write_fiftyone",
    "write_jsonl",
]

FORMATS = {"jsonl": write_jsonl, "csv": write_csv, "coco": write_coco, "fiftyone": write_fiftyone}
_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".json": "coco"}


def format_for(path: str | Path, format: str | None = None) -> str:
    """The export format: `format` when given, else from the suffix (.jsonl, .csv, .json = COCO)."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"unknown export format {format!r}; available: {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            f"cannot tell the export format from {Path(path).name!r}: use a .jsonl, .csv or .json (COCO) name, "
            f"or pass a format ({', '.join(FORMATS)})"
        )
    return _SUFFIXES[suffix]


def write_detections(
    results: Sequence[ImageResult],
    path: str | Path,
    *,
    format: str | None = None,
    concepts: Sequence[str] | None = None,
) -> Path:
    """Write `results` to `path` in `format` (default: from the suffix); returns the path."""
    return FORMATS[format_for(path, format)](results, path, concepts=concepts)
