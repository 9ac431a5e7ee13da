"""Recognition metrics: per-concept and averaged accuracies, negative splits, precision, multi-concept metrics,
the threshold sweep and its plot, and dataset scoring (with cross-concept negatives)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from focuskit.core.errors import DatasetError
from focuskit.data.concept_set import Concept, ConceptDataset, ReferenceView
from focuskit.eval.recognition import (
    CROSS_SPLIT,
    ImageScore,
    MultiItem,
    MultiScore,
    RecognitionScores,
    best_tau,
    load_multi_items,
    plot_sweep,
    score_dataset,
)


def row(concept: str, score: float, split: str = "positive") -> ImageScore:
    return ImageScore(concept, f"{concept}-{split}-{score}", split == "positive", split, score)


SCORES = RecognitionScores(
    [
        # "dog": 4 positives (3 found at tau 0.6), hard negatives 2 (1 false alarm), other 2 (none)
        row("dog", 0.9), row("dog", 0.8), row("dog", 0.7), row("dog", 0.5),
        row("dog", 0.65, "hard"), row("dog", 0.3, "hard"), row("dog", 0.1, "other"), row("dog", -math.inf, "other"),
        # "mug": 2 positives (both found), 1 fake negative (rejected)
        row("mug", 0.95), row("mug", 0.61), row("mug", 0.2, "fake"),
    ]
)  # fmt: skip


def test_metrics_per_concept_and_mean() -> None:
    m = SCORES.metrics(0.6)
    dog, mug = m.per_concept
    assert (dog.positives, dog.negatives) == (4, 4)
    assert dog.positive_accuracy == 0.75 and dog.negative_accuracy == 0.75
    assert dog.negative_accuracy_by_split == {"hard": 0.5, "other": 1.0}
    assert dog.weighted_accuracy == 0.75 and dog.precision == 0.75
    assert (mug.positive_accuracy, mug.negative_accuracy, mug.precision) == (1.0, 1.0, 1.0)
    assert mug.negative_accuracy_by_split == {"fake": 1.0}
    assert m.mean["positive_accuracy"] == pytest.approx(0.875)
    assert m.mean["weighted_accuracy"] == pytest.approx(0.875)
    assert m.mean["negative_accuracy_hard"] == 0.5 and m.mean["negative_accuracy_fake"] == 1.0
    assert m.multi is None


@pytest.mark.parametrize(
    "tau, recall, negative, precision",
    [(0.0, 1.0, 0.25, 4 / 7), (0.66, 0.75, 1.0, 1.0), (0.99, 0.0, 1.0, None)],
)
def test_metrics_at_thresholds(tau: float, recall: float, negative: float, precision: float | None) -> None:
    dog = SCORES.metrics(tau).per_concept[0]
    assert dog.positive_accuracy == recall and dog.negative_accuracy == negative
    assert dog.precision == (None if precision is None else pytest.approx(precision))


def test_concept_without_negatives_has_no_negative_metrics() -> None:
    only = RecognitionScores([row("cat", 0.9), row("cat", 0.2)]).metrics(0.5).per_concept[0]
    assert only.positive_accuracy == 0.5 and only.negative_accuracy is None and only.weighted_accuracy is None


def test_multi_concept_metrics() -> None:
    def multi(present: tuple[str, ...], a: float, b: float) -> MultiScore:
        return MultiScore(MultiItem(Path("x.jpg"), ("a", "b"), present), {"a": a, "b": b})

    scores = RecognitionScores(
        [row("a", 0.9)],
        [
            multi(("a", "b"), 0.9, 0.8),  # both present, both found: right
            multi(("a", "b"), 0.9, 0.1),  # both present, b missed: wrong
            multi(("a",), 0.9, 0.1),  # b absent and rejected, a found: right
            multi(("a",), 0.9, 0.7),  # b absent but "found": wrong
            multi((), 0.2, 0.1),  # neither: both rejected, right
        ],
    )
    mm = scores.metrics(0.5).multi
    assert mm is not None
    assert (mm.both_present, mm.both_present_count) == (0.5, 2)
    assert mm.at_least_one_absent == pytest.approx(2 / 3) and mm.at_least_one_absent_count == 3


def test_sweep_and_best_tau(tmp_path: Path) -> None:
    sweep = SCORES.sweep()
    recalls = [m.mean["positive_accuracy"] for m in sweep]
    assert recalls == sorted(recalls, reverse=True)  # raising tau never finds more
    best = best_tau(sweep)
    assert best.mean["weighted_accuracy"] == max(m.mean["weighted_accuracy"] for m in sweep)
    # Best window: every positive found (tau <= 0.5) and one of dog's hard negatives (0.3) rejected: 0.9375.
    assert 0.3 < best.tau <= 0.5 and best.mean["weighted_accuracy"] == pytest.approx(0.9375)
    png = plot_sweep(sweep, tmp_path / "sweep.png", chosen=0.62)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


class TableDetector:
    """Scores from a table keyed by image file name (the evaluation must not care where scores come from)."""

    def __init__(self, names: list[str], table: dict[str, dict[str, float]]) -> None:
        self.memory = names
        self.table = table
        self.calls: list[str] = []

    def concept_scores(self, image: Path, concepts: list[str]) -> dict[str, float]:
        self.calls.append(Path(image).name)
        return {c: self.table.get(Path(image).name, {}).get(c, -math.inf) for c in concepts}


def dataset(tmp_path: Path, negatives: bool) -> ConceptDataset:
    def views(*names: str) -> tuple[ReferenceView, ...]:
        return tuple(ReferenceView(tmp_path / n) for n in names)

    negs = {"hard": (tmp_path / "n1.jpg",)} if negatives else {}
    return ConceptDataset(
        "toy",
        tmp_path,
        (
            Concept("a", views("ra.jpg"), views("a1.jpg", "a2.jpg"), negs),
            Concept("b", views("rb.jpg"), views("b1.jpg"), negs),
        ),
    )


def test_score_dataset_with_negative_splits(tmp_path: Path) -> None:
    det = TableDetector(["a", "b"], {"a1.jpg": {"a": 0.9}, "a2.jpg": {"a": 0.4}, "b1.jpg": {"b": 0.8}})
    scores = score_dataset(dataset(tmp_path, negatives=True), det, progress=False)
    assert sorted(det.calls) == ["a1.jpg", "a2.jpg", "b1.jpg", "n1.jpg"]  # each photo scored once
    m = scores.metrics(0.5)
    assert [c.positive_accuracy for c in m.per_concept] == [0.5, 1.0]
    assert [c.negative_accuracy_by_split for c in m.per_concept] == [{"hard": 1.0}, {"hard": 1.0}]


def test_score_dataset_uses_other_concepts_as_negatives_when_there_are_none(tmp_path: Path) -> None:
    det = TableDetector(["a", "b"], {"a1.jpg": {"a": 0.9, "b": 0.7}, "b1.jpg": {"b": 0.8}})
    m = score_dataset(dataset(tmp_path, negatives=False), det, progress=False).metrics(0.5)
    a, b = m.per_concept
    assert a.negatives == 1 and a.negative_accuracy_by_split == {CROSS_SPLIT: 1.0}
    assert b.negatives == 2 and b.negative_accuracy_by_split == {CROSS_SPLIT: 0.5}  # b fired on a1


def test_score_dataset_needs_the_concepts_in_memory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"lacks concept\(s\) \['b'\]"):
        score_dataset(dataset(tmp_path, negatives=True), TableDetector(["a"], {}), progress=False)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"image": "x.jpg"}, "expected a list"),
        ([{"image": "x.jpg"}], "expected"),
        ([{"image": "x.jpg", "query": ["a"], "present": ["b"]}], "'present' must list"),
    ],
)
def test_bad_multi_file(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=message):
        load_multi_items(path)


def test_multi_file_paths_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "multi.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{"image": "p.jpg", "query": ["a", "b"], "present": ["a"]}]))
    (item,) = load_multi_items(path)
    assert item.image == tmp_path / "sub" / "p.jpg" and item.present == ("a",)
