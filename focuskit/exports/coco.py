"""COCO JSON (the detection-results flavour of the instances format) that `pycocotools.coco.COCO` opens.

`images` (id from 1, file_name, width, height), `categories` (id = concept position + 1, name), `annotations`
(bbox `[x, y, w, h]` pixels, score, area, iscrowd 0, and `segmentation` as compressed RLE when masks exist).
The best score per concept, also below the threshold, goes in each image's `focuskit_best_scores`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focuskit.core.io import atomic_open
from focuskit.core.masks import encode_rle
from focuskit.exports.records import ImageResult, concept_list, finite_or_none


def to_coco(results: Sequence[ImageResult], *, concepts: Sequence[str] | None = None) -> dict[str, Any]:
    order = concept_list(results, concepts)
    images, annotations = [], []
    for image_id, r in enumerate(results, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": r.image,
                "width": r.width,
                "height": r.height,
                "focuskit_best_scores": {n: finite_or_none(s) for n, s in r.best_scores.items()},
            }
        )
        dets = r.detections
        for i, cid in enumerate(dets.concept_ids(order)):
            x1, y1, x2, y2 = (float(v) for v in dets.xyxy[i])
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(cid) + 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(dets.scores[i]), 4),
                "area": round((x2 - x1) * (y2 - y1), 2),
                "iscrowd": 0,
            }
            if dets.masks is not None:
                ann["segmentation"] = encode_rle(dets.masks[i])
                ann["area"] = int(dets.masks[i].sum())
            annotations.append(ann)
    categories = [{"id": i + 1, "name": n, "supercategory": "concept"} for i, n in enumerate(order)]
    return {
        "info": {"description": "focuskit detections"},
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }


def write_coco(results: Sequence[ImageResult], path: str | Path, *, concepts: Sequence[str] | None = None) -> Path:
    path = Path(path)
    with atomic_open(path, "w") as f:
        json.dump(to_coco(results, concepts=concepts), f)
    return path
