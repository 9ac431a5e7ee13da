"""Counts over a dataset or an episode file, for `focuskit data stats`: what is there before any episode is built."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from focuskit.core.episode import Episode
from focuskit.data.concept_set import ConceptDataset
from focuskit.data.sequences import DataReport, SequenceDataset


def summarize_sequences(dataset: SequenceDataset, *, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Counts over a video dataset: sequences, frames, usable frames, categories, distractor tracks, skips."""
    infos = dataset.index()[:limit] if limit is not None else dataset.index()
    frames = usable = distractors = loaded = 0
    categories: Counter[str] = Counter()
    for info in tqdm(infos, desc=f"{dataset.format_name} stats", unit="seq", disable=not progress):
        seq = dataset.load(info.name)
        if seq is None:
            continue
        loaded += 1
        frames += len(seq)
        usable += len(seq.usable_indices())
        distractors += len(seq.distractors)
        categories[seq.category or "(none)"] += 1
    return {
        "format": dataset.format_name,
        "split": dataset.split,
        "sequences": len(infos),
        "sequences_loaded": loaded,
        "frames": frames,
        "usable_frames": usable,
        "categories": len(categories),
        "distractor_tracks": distractors,
        "issues": dataset.report.to_json(),
    }


def summarize_concepts(dataset: ConceptDataset, report: DataReport | None = None) -> dict[str, Any]:
    """Counts over a concept set: concepts, reference views, positives, boxes, negatives per split."""
    negatives: Counter[str] = Counter()
    for c in dataset.concepts:
        for split, paths in c.negatives.items():
            negatives[split] += len(paths)
    views = [v for c in dataset.concepts for v in (*c.references, *c.positives)]
    return {
        "format": dataset.name,
        "concepts": len(dataset.concepts),
        "references": sum(len(c.references) for c in dataset.concepts),
        "positives": sum(len(c.positives) for c in dataset.concepts),
        "views_with_box": sum(1 for v in views if v.box is not None),
        "negatives": dict(sorted(negatives.items())),
        "issues": (report or DataReport()).to_json(),
    }


def summarize_episodes(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Counts over an episode file: episodes, support counts, absent queries."""
    ks = Counter(ep.k for ep in episodes)
    return {
        "episodes": len(episodes),
        "supports_per_episode": {str(k): n for k, n in sorted(ks.items())},
        "absent_queries": sum(1 for ep in episodes if ep.query_box is None),
    }
