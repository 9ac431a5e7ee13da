from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from focuskit.core.box import Box
from focuskit.core.episode import Episode, ImageRef, Prediction, Support
from focuskit.eval.metrics import summarize
from focuskit.eval.runner import evaluate


class _Table:
    """A localizer answering from a lookup table keyed by query path (what a perfect/imperfect engine would say)."""

    name = "table"

    def __init__(self, answers: dict[str, Box | None]) -> None:
        self.answers = answers
        self.ks: list[int] = []

    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction:
        self.ks.append(len(supports))
        box = self.answers[str(query_image)]
        return Prediction(box=box, score=1.0 if box else 0.0)


def _ep(i: int, k: int, truth: Box | None) -> Episode:
    sup = tuple(Support(Path(f"s{i}_{j}.png"), Box(0, 0, 10, 10)) for j in range(k))
    return Episode(id=f"e{i}", supports=sup, query_image=Path(f"q{i}.png"), query_box=truth)


def test_strict_miou_and_rejection_rates() -> None:
    eps = [
        _ep(0, 4, Box(0, 0, 10, 10)),  # exact hit -> 1
        _ep(1, 4, Box(0, 0, 10, 10)),  # half overlap -> 1/3
        _ep(2, 4, Box(0, 0, 10, 10)),  # wrongly rejected -> 0
        _ep(3, 4, None),  # correctly rejected -> 1
        _ep(4, 2, None),  # box where absent -> 0
    ]
    answers = {"q0.png": Box(0, 0, 10, 10), "q1.png": Box(5, 0, 15, 10), "q2.png": None, "q3.png": None,
               "q4.png": Box(1, 1, 5, 5)}  # fmt: skip
    loc = _Table(answers)
    result = evaluate(loc, eps, [1, 4], progress=False)
    s1, s4 = result.summaries
    assert s1.k == 1 and s1.episodes == 5
    assert s1.miou == pytest.approx((1 + 1 / 3 + 0 + 1 + 0) / 5)
    assert s1.absent_rejected == pytest.approx(0.5)
    assert s1.present_rejected == pytest.approx(1 / 3)
    assert s4.episodes == 4 and result.skipped == {1: 0, 4: 1}  # the 2-shot episode is skipped at k=4
    assert loc.ks[:5] == [1] * 5 and set(loc.ks[5:]) == {4}
    rec = result.predictions[1]
    assert rec == {
        "id": "e1",
        "k": 1,
        "box": [5.0, 0.0, 15.0, 10.0],
        "score": 1.0,
        "iou": pytest.approx(0.3333, abs=1e-4),
    }


def test_summary_without_absent_episodes() -> None:
    s = summarize(1, [Box(0, 0, 1, 1)], [Box(0, 0, 1, 1)], 0.5)
    assert s.absent_rejected is None and s.present_rejected == 0.0 and s.episodes_per_s == pytest.approx(2.0)
