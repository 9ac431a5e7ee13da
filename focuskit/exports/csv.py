"""CSV: one row per detection (`image,width,height,concept,concept_id,score,x1,y1,x2,y2,mask_rle`).

`mask_rle` is the COCO compressed RLE counts string (column-major, size = the image's height x width), empty when
no mask was computed. Images with no detection get one row with empty detection fields, so every image is listed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from focuskit.core.io import atomic_open
from focuskit.core.masks import encode_rle
from focuskit.exports.records import ImageResult, concept_list

COLUMNS = ["image", "width", "height", "concept", "concept_id", "score", "x1", "y1", "x2", "y2", "mask_rle"]


def write_csv(results: Sequence[ImageResult], path: str | Path, *, concepts: Sequence[str] | None = None) -> Path:
    order = concept_list(results, concepts)
    path = Path(path)
    with atomic_open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in results:
            dets = r.detections
            if len(dets) == 0:
                writer.writerow([r.image, r.width, r.height, *[""] * (len(COLUMNS) - 3)])
                continue
            for i, cid in enumerate(dets.concept_ids(order)):
                rle = "" if dets.masks is None else encode_rle(dets.masks[i])["counts"]
                box = [round(float(v), 2) for v in dets.xyxy[i]]
                writer.writerow(
                    [r.image, r.width, r.height, dets.names[i], int(cid), round(float(dets.scores[i]), 4), *box, rle]
                )
    return path
