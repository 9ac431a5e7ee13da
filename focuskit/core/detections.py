"""`Detections`: the one currency of detection results (boxes, scores, concept names, optional masks).

Aligned arrays in the manner of `supervision.Detections`: `xyxy` (N, 4) pixels, `scores` (N,), `names` (N,), and
`masks` (N, H, W) bool at the image size when a segmenter ran. Converters at the edges: `to_supervision` /
`from_supervision` (when the optional `supervision` package is installed) and `to_fiftyone` / `from_fiftyone`
(FiftyOne's relative `[x, y, w, h]` in [0, 1] with the mask cropped to the box).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from focuskit.core.box import Box, box_iou_batch, nms
from focuskit.core.errors import FocusError
from focuskit.core.masks import as_masks, encode_rle

CONTAIN_THRESHOLD = 0.5
"""Per-instance NMS: a box with more than half of its area inside a kept box (or holding more than half of a kept
box) is the same instance, a part or a group of it, even when their IoU is low: another instance of an object lies
mostly outside the ones already found (heavier occlusion than that is not separated)."""


def instance_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5, contain: float = CONTAIN_THRESHOLD
) -> np.ndarray:
    """Greedy NMS for several instances: indices kept, best first. Besides IoU above `iou_threshold`, a box is
    suppressed when it lies mostly inside a kept one or mostly covers one (a part of a found instance, e.g. the
    handle of a found mug, or a box around two of them), so `max_instances=2` means two objects, not one twice."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    ix = np.maximum(0, np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]))
    iy = np.maximum(0, np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]))
    inter = ix * iy
    same = (box_iou_batch(b, b) > iou_threshold) | (inter / area[:, None] > contain) | (inter / area[None, :] > contain)
    keep: list[int] = []
    for i in np.argsort(-s, kind="stable"):
        if not any(same[i, j] for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detections:
    """N detections: `xyxy` (N, 4) float pixels, `scores` (N,), `names` (N,) concept names, `masks` (N, H, W) or None.

    `data` holds extra per-detection arrays of length N (kept aligned by indexing) or anything else (carried as is).
    `best_scores` is the best score per concept in the image, also below the threshold (-inf: no candidate), so a
    result can say "my mug 0.58, below 0.62" instead of only "nothing found".
    """

    xyxy: np.ndarray
    scores: np.ndarray
    names: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None
    best_scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.names = list(self.names)
        if not self.names:
            self.names = [""] * len(self.xyxy)
        if not (len(self.xyxy) == len(self.scores) == len(self.names)):
            raise FocusError(
                f"Detections need aligned arrays: {len(self.xyxy)} boxes, {len(self.scores)} scores, "
                f"{len(self.names)} names"
            )
        if self.masks is not None:
            self.masks = as_masks(self.masks, where="Detections.masks")
            if len(self.masks) != len(self.xyxy):
                raise FocusError(f"Detections need one mask per box: {len(self.xyxy)} boxes, {len(self.masks)} masks")

    @classmethod
    def empty(cls, best_scores: dict[str, float] | None = None) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros((0,)), [], best_scores=dict(best_scores or {}))

    @classmethod
    def from_boxes(
        cls, boxes: Sequence[Box], scores: Sequence[float], names: Sequence[str], masks: np.ndarray | None = None
    ) -> Detections:
        return cls(np.array([b.to_xyxy() for b in boxes]).reshape(-1, 4), np.asarray(scores), list(names), masks=masks)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[tuple[Box, float, str]]:
        for row, s, n in zip(self.xyxy, self.scores, self.names, strict=True):
            yield Box(*row), float(s), n

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        idx = np.atleast_1d(np.arange(len(self))[index])
        data = {k: (v[idx] if isinstance(v, np.ndarray) and len(v) == len(self) else v) for k, v in self.data.items()}
        return Detections(
            self.xyxy[idx],
            self.scores[idx],
            [self.names[i] for i in idx],
            data,
            None if self.masks is None else self.masks[idx],
            dict(self.best_scores),
        )

    def with_nms(self, iou_threshold: float = 0.5, *, per_name: bool = True) -> Detections:
        """Suppress overlapping detections; per name by default so two concepts may overlap."""
        if len(self) == 0:
            return self
        if not per_name:
            return self[nms(self.xyxy, self.scores, iou_threshold)]
        keep: list[int] = []
        names = np.asarray(self.names, dtype=object)
        for name in dict.fromkeys(self.names):
            idx = np.flatnonzero(names == name)
            keep.extend(idx[nms(self.xyxy[idx], self.scores[idx], iou_threshold)].tolist())
        keep.sort(key=lambda i: -self.scores[i])
        return self[np.asarray(keep, dtype=np.int64)]

    def with_max_instances(
        self, max_instances: int, iou_threshold: float = 0.5, contain: float = CONTAIN_THRESHOLD
    ) -> Detections:
        """Several instances per concept: per-instance NMS within each name (`instance_nms`: IoU, and parts or
        groups of a kept box), then its `max_instances` best, best score first."""
        if max_instances < 1:
            raise FocusError(f"max_instances must be >= 1, got {max_instances}")
        if max_instances == 1:
            dets = self.with_nms(iou_threshold, per_name=True)
        else:
            keep: list[int] = []
            names = np.asarray(self.names, dtype=object)
            for name in dict.fromkeys(self.names):
                idx = np.flatnonzero(names == name)
                keep.extend(idx[instance_nms(self.xyxy[idx], self.scores[idx], iou_threshold, contain)].tolist())
            keep.sort(key=lambda i: -self.scores[i])
            dets = self[np.asarray(keep, dtype=np.int64)]
        seen: dict[str, int] = {}
        keep = []
        for i, name in enumerate(dets.names):
            seen[name] = seen.get(name, 0) + 1
            if seen[name] <= max_instances:
                keep.append(i)
        return dets[np.asarray(keep, dtype=np.int64)]

    def near_misses(self, tau: float) -> list[tuple[str, float]]:
        """Concepts not detected whose best score fell below `tau` (and had a candidate at all), best first."""
        found = set(self.names)
        out = [(n, float(s)) for n, s in self.best_scores.items() if n not in found and np.isfinite(s) and s < tau]
        return sorted(out, key=lambda item: -item[1])

    def concept_ids(self, concepts: Sequence[str] | None = None) -> np.ndarray:
        """(N,) integer ids: positions in `concepts` (default: the names in order of first appearance)."""
        order = list(dict.fromkeys(concepts if concepts is not None else self.names))
        lookup = {n: i for i, n in enumerate(order)}
        missing = [n for n in self.names if n not in lookup]
        if missing:
            raise FocusError(f"concept {missing[0]!r} is not in the concept list {order}")
        return np.asarray([lookup[n] for n in self.names], dtype=np.int64)

    def to_json(self, *, masks: bool = True) -> list[dict[str, Any]]:
        """One dict per detection: concept, box (xyxy pixels), score, and `mask` (COCO RLE) when masks exist."""
        out = [
            {"concept": n, "box": [round(float(v), 2) for v in row], "score": round(float(s), 4)}
            for row, s, n in zip(self.xyxy, self.scores, self.names, strict=True)
        ]
        if masks and self.masks is not None:
            for item, m in zip(out, self.masks, strict=True):
                item["mask"] = encode_rle(m)
        return out

    # --- supervision --------------------------------------------------------------------------------------------
    def to_supervision(self, concepts: Sequence[str] | None = None) -> Any:
        """A `supervision.Detections`: xyxy, mask, confidence, class_id (see `concept_ids`), data["class_name"]."""
        sv = _supervision()
        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32).reshape(-1, 4),
            mask=None if self.masks is None else self.masks.copy(),
            confidence=self.scores.astype(np.float32),
            class_id=self.concept_ids(concepts),
            data={"class_name": np.asarray(self.names, dtype=str).reshape(-1)},
        )

    @classmethod
    def from_supervision(cls, detections: Any, concepts: Sequence[str] | None = None) -> Detections:
        """From a `supervision.Detections`: names from data["class_name"], else `concepts[class_id]`.

        A missing confidence becomes 1.0 per box; with neither names nor class ids the names are "".
        """
        n = len(detections.xyxy)
        scores = np.ones(n) if detections.confidence is None else np.asarray(detections.confidence, dtype=np.float64)
        class_names = (detections.data or {}).get("class_name")
        if class_names is not None:
            names = [str(v) for v in class_names]
        elif detections.class_id is not None and concepts is not None:
            ids = np.asarray(detections.class_id, dtype=np.int64)
            if len(ids) and (ids.min() < 0 or ids.max() >= len(concepts)):
                raise FocusError(f"class ids {ids.tolist()} do not index the {len(concepts)} concepts {list(concepts)}")
            names = [concepts[i] for i in ids]
        else:
            names = [""] * n
        masks = None if detections.mask is None else np.asarray(detections.mask, dtype=bool)
        return cls(np.asarray(detections.xyxy, dtype=np.float64), scores, names, masks=masks)

    # --- FiftyOne -----------------------------------------------------------------------------------------------
    def to_fiftyone(self, image_size: tuple[int, int]) -> list[dict[str, Any]]:
        """FiftyOne `Detection` fields: label, bounding_box `[x, y, w, h]` relative to (width, height), confidence.

        With masks, `mask` is the (h, w) boolean crop of the mask under the box, as FiftyOne stores instance masks.
        Build the objects with `fo.Detection(**d)` for each dict.
        """
        width, height = image_size
        if width <= 0 or height <= 0:
            raise FocusError(f"image_size must be positive (width, height), got {image_size}")
        out = []
        for i, (row, s, n) in enumerate(zip(self.xyxy, self.scores, self.names, strict=True)):
            x1, y1, x2, y2 = (float(v) for v in row)
            item: dict[str, Any] = {
                "label": n,
                "bounding_box": [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height],
                "confidence": float(s),
            }
            if self.masks is not None:
                c1, r1 = max(0, round(x1)), max(0, round(y1))
                c2, r2 = min(width, max(c1 + 1, round(x2))), min(height, max(r1 + 1, round(y2)))
                item["mask"] = self.masks[i, r1:r2, c1:c2].copy()
            out.append(item)
        return out

    @classmethod
    def from_fiftyone(cls, detections: Sequence[Any], image_size: tuple[int, int]) -> Detections:
        """From FiftyOne detections (objects with attributes or dicts): relative xywh back to pixel xyxy.

        Masks come back pasted into full-size (H, W) masks when every detection has one.
        """
        width, height = image_size

        def get(d: Any, key: str) -> Any:
            return d.get(key) if isinstance(d, dict) else getattr(d, key, None)

        boxes, scores, names, masks = [], [], [], []
        for d in detections:
            x, y, w, h = (float(v) for v in get(d, "bounding_box"))
            x1, y1, x2, y2 = x * width, y * height, (x + w) * width, (y + h) * height
            boxes.append((x1, y1, x2, y2))
            conf = get(d, "confidence")
            scores.append(1.0 if conf is None else float(conf))
            names.append(str(get(d, "label") or ""))
            crop = get(d, "mask")
            if crop is not None:
                full = np.zeros((height, width), dtype=bool)
                c1, r1 = max(0, round(x1)), max(0, round(y1))
                crop = np.asarray(crop, dtype=bool)[: height - r1, : width - c1]
                full[r1 : r1 + crop.shape[0], c1 : c1 + crop.shape[1]] = crop
                masks.append(full)
        all_masks = np.stack(masks) if masks and len(masks) == len(boxes) else None
        return cls(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores), names, masks=all_masks)


def _supervision() -> Any:
    try:
        import supervision as sv
    except ImportError:
        raise FocusError(
            "converting to supervision needs the optional package: pip install 'focuskit[supervision]'"
        ) from None
    return sv
