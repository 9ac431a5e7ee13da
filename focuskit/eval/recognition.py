"""Recognition evaluation of personalization: is the concept in this photo, yes or no, for every test photo.

The metrics of the personalization papers (MyVLM, Yo'LLaVA, PeKit), per concept and averaged over concepts:

* positive accuracy (recall): share of photos showing the concept in which it is detected;
* negative accuracy: share of photos without it in which it is not detected, per negative split when the dataset
  has them ("hard": same category, "other", "fake": generated look-alikes) and over all negatives;
* weighted accuracy: the mean of positive and negative accuracy (balanced, whatever the class sizes);
* precision: detected-and-present over all detections.

Multi-concept photos (PeKit's This-Is-My-Img multi-concept split) ask about a set of concepts at once:
* "both present": among photos showing every queried concept, the share where all are detected;
* "at least one absent": among photos missing at least one queried concept, the share answered exactly right
  (every absent concept rejected and every present one detected).

Detection scores are computed once per photo; the metrics at any threshold, and the threshold sweep (with a PNG
plot), are then cheap. Datasets without negatives (MyVLM, Yo'LLaVA) use the other concepts' positives as the
"other-concepts" negative split, as those papers do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from focuskit.core.errors import DatasetError
from focuskit.core.io import atomic_write_figure
from focuskit.data.concept_set import ConceptDataset

CROSS_SPLIT = "other-concepts"


@dataclass(frozen=True)
class ImageScore:
    concept: str
    image: str
    positive: bool
    split: str
    """'positive', or the negative split name."""
    score: float


@dataclass(frozen=True)
class MultiItem:
    """A multi-concept test photo: the concepts asked about and those actually in it."""

    image: Path
    query: tuple[str, ...]
    present: tuple[str, ...]


@dataclass(frozen=True)
class MultiScore:
    item: MultiItem
    scores: dict[str, float]


@dataclass(frozen=True)
class ConceptMetrics:
    concept: str
    positives: int
    negatives: int
    positive_accuracy: float | None
    negative_accuracy: float | None
    negative_accuracy_by_split: dict[str, float]
    weighted_accuracy: float | None
    precision: float | None


@dataclass(frozen=True)
class MultiMetrics:
    both_present: float | None
    both_present_count: int
    at_least_one_absent: float | None
    at_least_one_absent_count: int


@dataclass(frozen=True)
class RecognitionMetrics:
    tau: float
    per_concept: list[ConceptMetrics]
    mean: dict[str, float | None]
    """Macro averages over concepts: positive/negative/weighted accuracy, precision, and per negative split."""
    multi: MultiMetrics | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass
class RecognitionScores:
    """Raw per-(concept, photo) detection scores; metrics at any threshold come from here."""

    rows: list[ImageScore]
    multi: list[MultiScore] = field(default_factory=list)

    def concepts(self) -> list[str]:
        return list(dict.fromkeys(r.concept for r in self.rows))

    def metrics(self, tau: float) -> RecognitionMetrics:
        per: list[ConceptMetrics] = []
        for concept in self.concepts():
            rows = [r for r in self.rows if r.concept == concept]
            pos = [r for r in rows if r.positive]
            neg = [r for r in rows if not r.positive]
            tp = sum(r.score >= tau for r in pos)
            fp = sum(r.score >= tau for r in neg)
            splits: dict[str, float] = {}
            for split in dict.fromkeys(r.split for r in neg):
                in_split = [r for r in neg if r.split == split]
                splits[split] = sum(r.score < tau for r in in_split) / len(in_split)
            pa, na = _ratio(tp, len(pos)), _ratio(len(neg) - fp, len(neg))
            wa = None if pa is None or na is None else (pa + na) / 2
            per.append(ConceptMetrics(concept, len(pos), len(neg), pa, na, splits, wa, _ratio(tp, tp + fp)))
        mean: dict[str, float | None] = {
            "positive_accuracy": _mean([c.positive_accuracy for c in per]),
            "negative_accuracy": _mean([c.negative_accuracy for c in per]),
            "weighted_accuracy": _mean([c.weighted_accuracy for c in per]),
            "precision": _mean([c.precision for c in per]),
        }
        for split in dict.fromkeys(s for c in per for s in c.negative_accuracy_by_split):
            mean[f"negative_accuracy_{split}"] = _mean([c.negative_accuracy_by_split.get(split) for c in per])
        return RecognitionMetrics(tau=tau, per_concept=per, mean=mean, multi=self._multi_metrics(tau))

    def _multi_metrics(self, tau: float) -> MultiMetrics | None:
        if not self.multi:
            return None
        both = [m for m in self.multi if set(m.item.query) <= set(m.item.present)]
        some_absent = [m for m in self.multi if not set(m.item.query) <= set(m.item.present)]

        def exact(m: MultiScore) -> bool:
            found = {c for c in m.item.query if m.scores.get(c, -math.inf) >= tau}
            return found == set(m.item.query) & set(m.item.present)

        return MultiMetrics(
            both_present=_ratio(sum(exact(m) for m in both), len(both)),
            both_present_count=len(both),
            at_least_one_absent=_ratio(sum(exact(m) for m in some_absent), len(some_absent)),
            at_least_one_absent_count=len(some_absent),
        )

    def sweep(self, taus: Sequence[float] | None = None) -> list[RecognitionMetrics]:
        grid = np.round(np.arange(0.30, 0.951, 0.01), 2) if taus is None else np.asarray(taus, dtype=np.float64)
        return [self.metrics(float(t)) for t in grid]


def best_tau(sweep: Sequence[RecognitionMetrics]) -> RecognitionMetrics:
    """The sweep point with the highest mean weighted accuracy (the middle of a tied run, for margin)."""
    if not sweep:
        raise DatasetError("empty threshold sweep")
    values = np.array([m.mean["weighted_accuracy"] or 0.0 for m in sweep])
    ties = np.flatnonzero(values >= values.max() - 1e-12)
    return sweep[int(ties[len(ties) // 2])]


def plot_sweep(sweep: Sequence[RecognitionMetrics], path: str | Path, *, chosen: float | None = None) -> Path:
    """PNG of mean positive/negative/weighted accuracy and precision against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = [m.tau for m in sweep]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for key, label in (
        ("positive_accuracy", "positive acc. (recall)"),
        ("negative_accuracy", "negative acc."),
        ("weighted_accuracy", "weighted acc."),
        ("precision", "precision"),
    ):
        ys = [np.nan if m.mean.get(key) is None else m.mean[key] for m in sweep]
        ax.plot(taus, ys, label=label)
    if chosen is not None:
        ax.axvline(chosen, color="gray", linestyle="--", linewidth=1, label=f"tau = {chosen:.2f}")
    ax.set_xlabel("detection threshold tau (cosine)")
    ax.set_ylabel("mean over concepts")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return atomic_write_figure(path, fig)


def load_multi_items(path: str | Path) -> list[MultiItem]:
    """Read `multi.json`: a list of {"image": rel/path, "query": [names], "present": [names]} (paths relative to it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read multi-concept file {path}: {exc}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of {{image, query, present}} objects")
    items = []
    for i, e in enumerate(data):
        where = f"{path}, item {i + 1}"
        if not isinstance(e, dict) or not isinstance(e.get("image"), str) or not isinstance(e.get("query"), list):
            raise DatasetError(f"{where}: expected {{'image': str, 'query': [names], 'present': [names]}}, got {e!r}")
        present = e.get("present", [])
        if not isinstance(present, list) or not set(present) <= set(e["query"]):
            raise DatasetError(f"{where}: 'present' must list some of the queried concepts {e['query']}")
        img = Path(e["image"])
        items.append(MultiItem(img if img.is_absolute() else path.parent / img, tuple(e["query"]), tuple(present)))
    return items


def score_dataset(
    dataset: ConceptDataset,
    detector: Any,
    *,
    multi: Sequence[MultiItem] = (),
    cross_negatives: bool = True,
    progress: bool = True,
) -> RecognitionScores:
    """Run `detector.concept_scores` once per distinct photo and collect each concept's score on its test photos.

    `detector` is a `focuskit.personalize.Detector` whose memory holds the dataset's concepts.
    """
    names = [c.name for c in dataset.concepts]
    missing = [n for n in names if n not in detector.memory]
    if missing:
        raise DatasetError(f"the memory lacks concept(s) {missing} of dataset {dataset.name}: add them first")
    jobs: list[tuple[str, Path, bool, str]] = []
    for c in dataset.concepts:
        jobs.extend((c.name, v.image, True, "positive") for v in c.positives)
        for split, paths in c.negatives.items():
            jobs.extend((c.name, p, False, split) for p in paths)
        if cross_negatives and not c.negatives:
            for other in dataset.concepts:
                if other.name != c.name:
                    jobs.extend((c.name, v.image, False, CROSS_SPLIT) for v in other.positives)
    if not jobs and not multi:
        raise DatasetError(f"dataset {dataset.name} has no test photos (positives or negatives)")
    images = list(dict.fromkeys([j[1] for j in jobs] + [m.image for m in multi]))
    cache: dict[Path, dict[str, float]] = {}
    for img in tqdm(images, desc="recognition", unit="img", disable=not progress):
        cache[img] = detector.concept_scores(img, names)
    rows = [ImageScore(n, str(p), pos, split, cache[p].get(n, -math.inf)) for n, p, pos, split in jobs]
    multi_scores = [MultiScore(m, cache[m.image]) for m in multi]
    return RecognitionScores(rows, multi_scores)
