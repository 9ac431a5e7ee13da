"""FiftyOne JSON: `[{"filepath", "detections": [{"label", "bounding_box", "confidence"}]}]`, boxes relative xywh.

`bounding_box` is `[x, y, w, h]` in [0, 1] of the image size, FiftyOne's convention; read it with
`fo.Detection(**d)` per entry. Masks are left out (FiftyOne keeps them as per-box arrays; see
`Detections.to_fiftyone`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from focuskit.core.io import atomic_open
from focuskit.exports.records import ImageResult, concept_list


def write_fiftyone(results: Sequence[ImageResult], path: str | Path, *, concepts: Sequence[str] | None = None) -> Path:
    concept_list(results, concepts)  # same validation as the other writers
    rows = []
    for r in results:
        dets = [{k: v for k, v in d.items() if k != "mask"} for d in r.detections.to_fiftyone((r.width, r.height))]
        rows.append({"filepath": r.image, "detections": dets})
    path = Path(path)
    with atomic_open(path, "w") as f:
        json.dump(rows, f)
    return path
