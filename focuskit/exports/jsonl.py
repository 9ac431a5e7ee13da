"""JSONL: one line per image, `{"image", "width", "height", "detections": [...], "best_scores": {...}}`.

Each detection is `{"concept", "concept_id", "box": [x1, y1, x2, y2] pixels, "score"}` plus `"mask"` (COCO RLE)
when masks were computed. Extra per-image fields (`ImageResult.extra`, e.g. `ask`'s answer and prompt) come
before the detections.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focuskit.core.io import atomic_open
from focuskit.exports.records import ImageResult, concept_list, finite_or_none


def jsonl_record(r: ImageResult, order: Sequence[str]) -> dict[str, Any]:
    """One image's JSONL line as a dict (also what `focuskit detect --json` prints per image)."""
    dets = r.detections.to_json()
    for item, cid in zip(dets, r.detections.concept_ids(order), strict=True):
        item["concept_id"] = int(cid)
    return {
        "image": r.image,
        "width": r.width,
        "height": r.height,
        **r.extra,
        "detections": dets,
        "best_scores": {n: finite_or_none(s) for n, s in r.best_scores.items()},
    }


def write_jsonl(results: Sequence[ImageResult], path: str | Path, *, concepts: Sequence[str] | None = None) -> Path:
    order = concept_list(results, concepts)
    path = Path(path)
    with atomic_open(path, "w") as f:
        for r in results:
            f.write(json.dumps(jsonl_record(r, order)) + "\n")
    return path
