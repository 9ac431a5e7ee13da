"""Box refinement (focuskit.matcher.refine): a loose box on the right object is tightened, never scored lower, and
refinement cannot turn a "not present" answer into a found one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box, iou
from focuskit.core.episode import Support
from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer
from focuskit.matcher import MatcherConfig
from focuskit.matcher.refine import refine_best, refine_boxes
from focuskit.models.encoders import FeatureMap

PHOTOS = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"
CUP_TEACH = ("cup_f0010.jpg", Box(308, 122, 413, 381))
CUP_QUERY = ("cup_f0195.jpg", Box(258, 103, 379, 401))


def _grown(b: Box, f: float, size: tuple[int, int]) -> Box:
    dw, dh = b.width * f, b.height * f
    return Box(b.x1 - dw, b.y1 - dh, b.x2 + dw, b.y2 + dh).clip(size)


def test_refinement_tightens_a_loose_box_on_a_synthetic_map() -> None:
    feats = np.zeros((2, 40, 40), np.float32)
    feats[1] = 1.0
    feats[:, 10:30, 12:28] = np.array([1.0, 0.0], np.float32)[:, None, None]  # the object: another direction
    fm = FeatureMap(torch.from_numpy(feats), (160, 160))
    truth = np.array([[48.0, 40.0, 112.0, 120.0]])
    view = fm.pool_boxes(truth)

    def score(b: np.ndarray) -> np.ndarray:
        return fm.pool_boxes(b) @ view[0]

    loose = np.array([[20.0, 10.0, 150.0, 150.0]])
    box, s = refine_boxes(loose, score, (160, 160))
    assert s[0] > score(loose)[0]
    assert iou(Box(*box[0]), Box(*truth[0])) > iou(Box(*loose[0]), Box(*truth[0])) + 0.3


def test_refinement_tightens_a_loose_box_on_a_real_photo() -> None:
    loc = MatchingLocalizer(MatchingConfig(refine_top=0))
    views = loc.embed_supports([Support(PHOTOS / CUP_TEACH[0], CUP_TEACH[1])])
    query = Image.open(PHOTOS / CUP_QUERY[0]).convert("RGB")
    fm = loc.encoder.encode(query)
    truth = CUP_QUERY[1]
    loose = _grown(truth, 0.3, query.size)

    def score(b: np.ndarray) -> np.ndarray:
        return loc.score_boxes(fm, b, views)[0]

    start = score(loose.to_array()[None])
    box, s = refine_boxes(loose.to_array()[None], score, query.size)
    assert s[0] >= start[0]
    assert iou(Box(*box[0]), truth) > iou(loose, truth) + 0.1


def test_small_gains_keep_the_proposal() -> None:
    """A refinement that raises the score by less than `accept_gain` does not replace its proposal."""
    boxes = np.array([[0.0, 0.0, 50.0, 50.0], [300.0, 300.0, 350.0, 350.0]])

    def score(b: np.ndarray) -> np.ndarray:  # the first object scores 0.8, the second 0.79; wider ones up to 0.01 more
        return np.where((b[:, 0] + b[:, 2]) / 2 < 200, 0.8, 0.79) + 0.01 * np.clip((b[:, 2] - b[:, 0] - 50) / 40, 0, 1)

    scores = score(boxes)
    i, box, s = refine_best(boxes, scores, score, (400, 400), top=2, accept_gain=0.03)
    assert i == 0 and np.allclose(box, boxes[0]) and s == pytest.approx(0.8)
    i, box, s = refine_best(boxes, scores, score, (400, 400), top=2, accept_gain=0.0)
    assert s > 0.8 and not np.allclose(box, boxes[i])  # without the bar, the small gains are taken


def test_refinement_is_the_default_and_keeps_absent_answers() -> None:
    assert MatcherConfig().refine_top > 0 and MatchingConfig().refine_top == MatcherConfig().refine_top
    on, off = MatchingLocalizer(), MatchingLocalizer(MatchingConfig(refine_top=0))
    supports = [Support(PHOTOS / CUP_TEACH[0], CUP_TEACH[1])]
    for name in ("cup_f0195.jpg", "astronaut.jpg", "coffee.jpg"):
        a, b = on.localize(supports, PHOTOS / name), off.localize(supports, PHOTOS / name)
        assert (a.box is None) == (b.box is None)
        if a.box is not None:
            assert a.score >= b.score - 1e-6
