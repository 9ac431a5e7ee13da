"""JSONL: one line per image, `{"image", "width", "height", "detections": [...], "best_scores": {...}}`.

Each detection is `{"concept", "concept_id", "box": [x1, y1, x2, y2] pixels, "score"}` plus `"mask"` (COCO RLE)
when masks were computed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from focuskit.core.io import atomic_open
from focuskit.exports.records import ImageResult, concept_list, finite_or_none


def write_jsonl(results: Sequence[ImageResult], path: str | Path, *, concepts: Sequence[str] | None = None) -> Path:
    order = concept_list(results, concepts)
    path = Path(path)
    with atomic_open(path, "w") as f:
        for r in results:
            dets = r.detections.to_json()
            for item, cid in zip(dets, r.detections.concept_ids(order), strict=True):
                item["concept_id"] = int(cid)
            line = {
                "image": r.image,
                "width": r.width,
                "height": r.height,
                "detections": dets,
                "best_scores": {n: finite_or_none(s) for n, s in r.best_scores.items()},
            }
            f.write(json.dumps(line) + "\n")
    return path
