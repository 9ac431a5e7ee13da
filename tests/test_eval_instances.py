"""Multi-instance scoring: one-to-one matching, set IoU, precision/recall/F1, AP, and the episode file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from focuskit.core.box import Box, iou
from focuskit.core.errors import DatasetError
from focuskit.eval.instances import (
    average_precision,
    load_instance_episodes,
    match_instances,
    query_boxes,
    summarize_instances,
)

A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 40, 50, 50]
NEAR_A = [1, 0, 11, 10]  # IoU with A = 9/11


@pytest.mark.parametrize(
    ("pred", "true", "tp", "fp", "fn", "set_iou"),
    [
        ([], [], 0, 0, 0, 1.0),  # correct "absent"
        ([A], [], 0, 1, 0, 0.0),
        ([], [A], 0, 0, 1, 0.0),
        ([A, B], [B, A], 2, 0, 0, 1.0),  # order does not matter
        ([NEAR_A], [A, B], 1, 0, 1, 9 / 11 / 2),
        ([A, NEAR_A], [A], 1, 1, 0, 0.5),  # one box cannot claim two instances
        ([C], [A], 0, 1, 1, 0.0),
    ],
)
def test_match_instances(pred, true, tp, fp, fn, set_iou) -> None:
    m = match_instances(np.array(pred, dtype=float).reshape(-1, 4), true)
    assert (m.tp, m.fp, m.fn) == (tp, fp, fn)
    assert m.set_iou == pytest.approx(set_iou)


def test_set_iou_is_the_episode_iou_for_single_boxes() -> None:
    p, t = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert match_instances([p], [t], 0.3).set_iou == pytest.approx(iou(p, t))
    assert match_instances([p], [t], 0.5).tp == 0  # IoU 1/3 is below the threshold
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances([p], [t], 0.0)


def test_hungarian_beats_greedy() -> None:
    """Greedy by IoU would pair p0 with t0 (0.68) and leave p1 with nothing; the optimum pairs both."""
    p0, p1 = [0, 0, 10, 10], [4, 0, 14, 10]
    t0, t1 = [2, 0, 12, 10], [-6, 0, 4, 10]
    m = match_instances([p0, p1], [t0, t1], 0.1)
    assert sorted(m.pairs) == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    ("preds", "truths", "ap"),
    [
        ([([A, B], [0.9, 0.8])], [[A, B]], 1.0),
        ([([C, A], [0.9, 0.8])], [[A]], 0.5),  # a false positive ranked first halves precision at full recall
        ([([A, C], [0.9, 0.8])], [[A]], 1.0),  # ranked last it costs nothing
        ([([A], [0.9]), ([], [])], [[A], [B]], 0.5),  # half the instances are never found
        ([([A], [0.9])], [[]], None),  # no true boxes: undefined
    ],
)
def test_average_precision(preds, truths, ap) -> None:
    got = average_precision(preds, truths)
    assert got == (None if ap is None else pytest.approx(ap))


def test_summary() -> None:
    preds = [([A, B], [0.9, 0.8]), ([C], [0.7]), ([], [])]
    truths = [[A, B], [], []]
    s = summarize_instances(preds, truths)
    assert (s.episodes, s.true_boxes, s.predicted_boxes) == (3, 2, 3)
    assert s.precision == pytest.approx(2 / 3) and s.recall == 1.0 and s.f1 == pytest.approx(0.8)
    assert s.mean_set_iou == pytest.approx((1 + 0 + 1) / 3)
    assert s.ap == pytest.approx(1.0)
    assert set(s.to_json()) >= {"mean_set_iou", "ap", "f1"}


def test_episode_file(tmp_path: Path, make_image) -> None:
    make_image("s.png", size=(60, 40))
    make_image("q.png", size=(60, 40))
    support = {"image": "s.png", "box": [1, 1, 20, 20]}
    lines = [
        {"id": "two", "supports": [support], "query": {"image": "q.png", "boxes": [[0, 0, 10, 10], [30, 5, 50, 25]]}},
        {"id": "none", "supports": [support], "query": {"image": "q.png", "boxes": []}},
        {"id": "single", "supports": [support], "query": {"image": "q.png", "box": [2, 2, 8, 8]}},
    ]
    path = tmp_path / "multi.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    eps = load_instance_episodes(path)
    assert [e.id for e in eps] == ["two", "none", "single"]
    assert query_boxes(eps[0]) == [Box(0, 0, 10, 10), Box(30, 5, 50, 25)] and eps[0].query_box == Box(0, 0, 10, 10)
    assert query_boxes(eps[1]) == [] and eps[1].query_box is None
    assert query_boxes(eps[2]) == [Box(2, 2, 8, 8)]
    assert eps[0].supports[0].image == tmp_path / "s.png"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"image": "q.png", "boxes": "x"}, "'boxes' must be a list"),
        ({"image": "q.png", "boxes": [[0, 0, 1]]}, "must be \\[x1, y1, x2, y2\\]"),
        ({"image": "q.png", "boxes": [[5, 5, 1, 1]]}, "zero or negative area"),
    ],
)
def test_episode_file_errors(tmp_path: Path, query, error) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"supports": [{"image": "s.png", "box": [0, 0, 5, 5]}], "query": query}) + "\n")
    with pytest.raises(DatasetError, match=error):
        load_instance_episodes(path)
    with pytest.raises(DatasetError, match="not found"):
        load_instance_episodes(tmp_path / "missing.jsonl")
