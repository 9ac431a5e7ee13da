"""Several instances per query: one-to-one matching by IoU, per-episode scores, AP, and a multi-instance episode file.

The single-box metrics (`eval.metrics`) score one predicted box against one true box. When a query shows the
concept several times (two of my mugs on the table), predictions and truths are paired one-to-one by the Hungarian
algorithm on IoU, so one box can never claim two instances:

* `set_iou`: the sum of the paired IoUs over max(#predicted, #true): 1 for a perfect answer, 1 for a correct
  "absent" (both empty), 0 for any box where nothing is; with one box on each side it is exactly the episode IoU of
  the strict convention, so it extends mIoU;
* at an IoU threshold (0.5 by default): true positives (pairs at or above it), false positives, false negatives,
  precision, recall, F1;
* `average_precision` over a set of episodes ranks every predicted box by its score (COCO/VOC style: greedy
  matching in score order, all-point interpolation).

Multi-instance episodes are JSONL like focuskit's episode files with the query's `"boxes"` list instead of
`"box"` (`[]` when the concept is absent); they load as `Episode`s whose `meta["query_boxes"]` holds every box
(and `query_box` the first, so single-box engines and metrics still run on them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from focuskit.core.box import Box, box_iou_batch
from focuskit.core.episode import Episode
from focuskit.core.errors import DatasetError
from focuskit.data.episodes_jsonl import episode_from_record


def _boxes(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).reshape(-1, 4)
    return np.asarray([b.to_xyxy() if isinstance(b, Box) else tuple(b) for b in value], dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class InstanceMatch:
    """The one-to-one pairing of predicted and true boxes in one query."""

    pairs: tuple[tuple[int, int], ...]
    """(predicted index, true index) of every pair at or above the threshold."""
    ious: tuple[float, ...]
    """IoU of each pair in `pairs`."""
    n_pred: int
    n_true: int
    set_iou: float
    """Sum of the IoUs of the optimal pairing (any IoU) over max(n_pred, n_true); 1.0 when both are empty."""

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp


def match_instances(pred_xyxy: Any, true_xyxy: Any, iou_threshold: float = 0.5) -> InstanceMatch:
    """Pair (N, 4) predicted with (M, 4) true boxes one-to-one, maximising the summed IoU (Hungarian algorithm)."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred, true = _boxes(pred_xyxy), _boxes(true_xyxy)
    if len(pred) == 0 or len(true) == 0:
        return InstanceMatch((), (), len(pred), len(true), 1.0 if len(pred) == len(true) == 0 else 0.0)
    ious = box_iou_batch(pred, true)
    rows, cols = linear_sum_assignment(-ious)
    paired = ious[rows, cols]
    keep = paired >= iou_threshold
    return InstanceMatch(
        pairs=tuple((int(r), int(c)) for r, c in zip(rows[keep], cols[keep], strict=True)),
        ious=tuple(float(v) for v in paired[keep]),
        n_pred=len(pred),
        n_true=len(true),
        set_iou=float(paired.sum() / max(len(pred), len(true))),
    )


def average_precision(
    preds: Sequence[tuple[Any, Any]], truths: Sequence[Any], iou_threshold: float = 0.5
) -> float | None:
    """AP over episodes: `preds[i]` = (boxes (N, 4), scores (N,)) and `truths[i]` = boxes (M, 4) of episode i.

    Every predicted box across all episodes is ranked by score and matched greedily to the unmatched true box of
    its episode with the highest IoU (at least `iou_threshold`), as COCO and VOC do; AP is the area under the
    all-point interpolated precision-recall curve. None when there is no true box at all.
    """
    if len(preds) != len(truths):
        raise ValueError(f"average_precision needs one prediction per episode: {len(preds)} vs {len(truths)}")
    total = sum(len(_boxes(t)) for t in truths)
    if total == 0:
        return None
    entries = []
    for i, (boxes, scores) in enumerate(preds):
        b, s = _boxes(boxes), np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(b) != len(s):
            raise ValueError(f"episode {i}: {len(b)} boxes but {len(s)} scores")
        entries.extend((float(s[j]), i, j) for j in range(len(b)))
    entries.sort(key=lambda e: -e[0])
    used = [np.zeros(len(_boxes(t)), dtype=bool) for t in truths]
    ious = [box_iou_batch(_boxes(p[0]), _boxes(t)) for p, t in zip(preds, truths, strict=True)]
    hits = np.zeros(len(entries))
    for rank, (_, i, j) in enumerate(entries):
        if ious[i].shape[1] == 0:
            continue
        row = np.where(used[i], -1.0, ious[i][j])
        best = int(np.argmax(row))
        if row[best] >= iou_threshold:
            used[i][best] = True
            hits[rank] = 1
    tp = np.cumsum(hits)
    recall = tp / total
    precision = tp / np.arange(1, len(entries) + 1)
    # All-point interpolation: precision made monotone from the right, summed over recall steps.
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


@dataclass(frozen=True)
class InstanceSummary:
    episodes: int
    true_boxes: int
    predicted_boxes: int
    mean_set_iou: float
    precision: float | None
    recall: float | None
    f1: float | None
    ap: float | None
    iou_threshold: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize_instances(
    preds: Sequence[tuple[Any, Any]], truths: Sequence[Any], iou_threshold: float = 0.5
) -> InstanceSummary:
    """Micro precision/recall/F1 of the one-to-one matches, mean set IoU, and AP over all episodes."""
    matches = [match_instances(p[0], t, iou_threshold) for p, t in zip(preds, truths, strict=True)]
    tp = sum(m.tp for m in matches)
    n_pred = sum(m.n_pred for m in matches)
    n_true = sum(m.n_true for m in matches)
    precision = tp / n_pred if n_pred else None
    recall = tp / n_true if n_true else None
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else None
    return InstanceSummary(
        episodes=len(matches),
        true_boxes=n_true,
        predicted_boxes=n_pred,
        mean_set_iou=float(np.mean([m.set_iou for m in matches])) if matches else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        ap=average_precision(preds, truths, iou_threshold) if matches else None,
        iou_threshold=iou_threshold,
    )


def query_boxes(episode: Episode) -> list[Box]:
    """Every true box of the query: `meta["query_boxes"]` for multi-instance episodes, else the one box (or none)."""
    boxes = episode.meta.get("query_boxes")
    if boxes is not None:
        return [b if isinstance(b, Box) else Box.from_xyxy(b) for b in boxes]
    return [] if episode.query_box is None else [episode.query_box]


def load_instance_episodes(path: str | Path) -> list[Episode]:
    """Read multi-instance episodes: focuskit JSONL whose query has `"boxes": [[x1, y1, x2, y2], ...]`.

    A query with `"box"` (one box or null) is read too, so single- and multi-instance files mix.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"multi-instance episode file not found: {path}")
    episodes = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            query = record.get("query") if isinstance(record, dict) else None
            if not isinstance(query, dict) or "boxes" not in query:
                episodes.append(episode_from_record(record, path.parent, where))
                continue
            raw = query["boxes"]
            if not isinstance(raw, list):
                raise DatasetError(f"{where}, query: 'boxes' must be a list of [x1, y1, x2, y2], got {raw!r}")
            first = {**query, "box": raw[0] if raw else None}
            first.pop("boxes")
            single = {**record, "query": first}
            single.setdefault("id", f"{path.stem}-{lineno}")
            ep = episode_from_record(single, path.parent, where)
            boxes = [episode_from_record({**single, "query": {**first, "box": b}}, path.parent, where).query_box
                     for b in raw]  # fmt: skip
            episodes.append(
                Episode(ep.id, ep.supports, ep.query_image, ep.query_box, {**ep.meta, "query_boxes": boxes})
            )
    return episodes
