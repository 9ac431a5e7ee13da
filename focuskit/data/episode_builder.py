"""k-shot episodes from annotated videos and concept sets, following the FOCUS paper's construction.

Videos (GOT-10k, LaSOT, TAO, PerMIRS), for each k separately:

* the query is the sequence's final usable frame (or the frame the dataset's protocol fixes, PerMIRS: frame 1);
* the k supports are spread uniformly over the sequence before it: the first usable frame, the last usable frame
  before the query, and the rest at equal time intervals in between, each snapped to the nearest unused usable frame;
* a frame is usable when the target is visible (not absent, fully occluded or out of view), has a box, its image
  can be read, and the box lies in the frame. Boxes sticking out of the frame by more than half a pixel are clipped
  to it (counted as `box_clipped_to_frame`); boxes entirely outside, and unreadable images, make the frame unusable
  (counted) and the sampling is redone without it;
* a sequence with fewer than k+1 usable frames is skipped for that k (counted per k);
* for multi-object videos (TAO) the boxes of the other tracks in each chosen frame go to `Episode.meta`.

Because the paper samples supports anew for each k (a 2-shot episode uses the first frame and a late one, not the
first two of the 4-shot supports), episodes are built per k; `focuskit data episodes` writes one file per k.

Concept sets with boxes (PerSeg, generic concept folders): the supports are a concept's first k annotated views
(PerSAM's reference `00` first), and every remaining annotated view is a query, one episode each.

Negative episodes (for rejection) pair an episode's supports with the query image of another sequence or concept,
with `query_box=None`. Everything random (partitions, negatives) draws from generators seeded by `seed`, and the
sampling of supports is deterministic, so the same inputs give the same files.

The pieces live in their own modules: settings and partitions in `episode_config`, the frame rule in
`frame_sampling`, the build statistics in `episode_stats`, dataset counts in `summaries`. Their names are
re-exported here, the import path code and docs use.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import ConfigError
from focuskit.data.concept_set import ConceptDataset
from focuskit.data.episode_config import DEFAULT_FRACTIONS, PARTS, EpisodeConfig, Part, Partition, partition_infos
from focuskit.data.episode_stats import EpisodeStats, plot_statistics
from focuskit.data.frame_sampling import BOX_SLACK_PX, FrameChecker, select_frames, uniform_pick
from focuskit.data.sequences import DataReport, SequenceDataset, SequenceInfo, TrackSequence
from focuskit.data.summaries import summarize_concepts, summarize_episodes, summarize_sequences


@dataclass
class EpisodeSet:
    """Episodes per k, and the statistics of how they were built."""

    by_k: dict[int, list[Episode]]
    stats: EpisodeStats

    def total(self) -> int:
        return sum(len(v) for v in self.by_k.values())


@dataclass(frozen=True)
class _Built:
    unit: str
    episode: Episode


def _boxes_json(boxes: Iterable[Box]) -> list[list[float]]:
    return [b.as_list() for b in boxes]


def _record_box(stats: EpisodeStats, box: Box, size: tuple[int, int] | None) -> None:
    stats.box_px_sizes.append(math.sqrt(box.area))
    if size is not None:
        stats.box_rel_sizes.append(math.sqrt(box.area / (size[0] * size[1])))


def _sequence_episode(
    source: str, seq: TrackSequence, k: int, picks: list[int], q: int, check: FrameChecker
) -> Episode:
    supports = tuple(Support(seq.frames[i], check.usable(i)[0]) for i in picks)
    meta: dict[str, Any] = {"source": source, "sequence": seq.name, "k": k, "frames": [*picks, q]}
    if seq.category:
        meta["category"] = seq.category
    if seq.distractors:
        meta["distractors"] = {
            "supports": [_boxes_json(seq.distractor_boxes(i)) for i in picks],
            "query": _boxes_json(seq.distractor_boxes(q)),
        }
    return Episode(
        id=f"{source}/{seq.name}/k{k}",
        supports=supports,
        query_image=seq.frames[q],
        query_box=check.usable(q)[0],
        meta=meta,
    )


def _add_negatives(
    by_k: dict[int, list[_Built]], config: EpisodeConfig, stats: EpisodeStats
) -> dict[int, list[Episode]]:
    out: dict[int, list[Episode]] = {}
    for k, built in by_k.items():
        episodes = [b.episode for b in built]
        stats.episodes[k] = len(episodes)
        stats.negatives[k] = 0
        # Only positive episodes lend supports or a query: a negative's query could show the base's target.
        positives = [b for b in built if b.episode.query_box is not None]
        if config.negatives and len({b.unit for b in positives}) < 2:
            stats.report.add("negatives_need_two_sequences", f"k={k}", config.negatives)
        elif config.negatives:
            rng = np.random.default_rng([config.seed, 1])
            bases = rng.choice(len(positives), size=config.negatives, replace=config.negatives > len(positives))
            for n, b in enumerate(bases.tolist()):
                base = positives[b]
                others = [j for j, o in enumerate(positives) if o.unit != base.unit]
                other = positives[others[int(rng.integers(len(others)))]]
                meta = {k_: v for k_, v in base.episode.meta.items() if k_ not in ("distractors", "frames")}
                meta.update({"negative": True, "query_from": other.unit})
                if "frames" in base.episode.meta and "frames" in other.episode.meta:
                    meta["frames"] = [*base.episode.meta["frames"][:-1], other.episode.meta["frames"][-1]]
                episodes.append(
                    Episode(
                        id=f"{base.episode.id}/neg{n}",
                        supports=base.episode.supports,
                        query_image=other.episode.query_image,
                        query_box=None,
                        meta=meta,
                    )
                )
                stats.negatives[k] += 1
        out[k] = episodes
    return out


def build_sequence_episodes(dataset: SequenceDataset, config: EpisodeConfig, *, progress: bool = True) -> EpisodeSet:
    """Episodes for every k in `config.shots` from the (partitioned, limited) sequences of `dataset`."""
    source = dataset.format_name
    infos = partition_infos(dataset.index(), config)
    if config.limit is not None:
        infos = infos[: config.limit]
    stats = EpisodeStats(source=source, units=len(infos))
    built: dict[int, list[_Built]] = {k: [] for k in config.shots}
    stats.skipped = {k: Counter() for k in config.shots}
    for info in tqdm(infos, desc=f"{source} episodes", unit="seq", disable=not progress):
        seq = dataset.load(info.name)
        if seq is None:
            for k in config.shots:
                stats.skipped[k]["unreadable_sequence"] += 1
            continue
        check = FrameChecker(seq, config, stats.report)
        used: set[int] = set()
        for k in config.shots:
            chosen = select_frames(seq, k, check, config.query_gap)
            if isinstance(chosen, str):
                stats.skipped[k][chosen] += 1
                continue
            picks, q = chosen
            if k == config.shots[0]:
                stats.objects_per_image[1 + len(seq.distractor_boxes(q))] += 1
            built[k].append(_Built(seq.name, _sequence_episode(source, seq, k, picks, q, check)))
            for i in (*picks, q):
                if i not in used:
                    used.add(i)
                    _record_box(stats, *check.usable(i))
    stats.report.merge(dataset.report)
    return EpisodeSet(by_k=_add_negatives(built, config, stats), stats=stats)


def concept_sequence(name: str, views: Sequence[Any]) -> TrackSequence:
    """A concept's annotated views as a sequence (one 'frame' per view), to reuse the frame checks."""
    boxed = [v for v in views if v.box is not None]
    return TrackSequence(
        name=name,
        frames=tuple(v.image for v in boxed),
        boxes=tuple(v.box for v in boxed),
        visible=tuple(True for _ in boxed),
        category=name,
    )


def build_concept_episodes(
    dataset: ConceptDataset, config: EpisodeConfig, *, report: DataReport | None = None, progress: bool = True
) -> EpisodeSet:
    """Episodes from concepts with boxed views: the first k views are supports, each later view a query."""
    source = dataset.name
    infos = partition_infos([SequenceInfo(c.name, c.name) for c in dataset.concepts], config)
    if config.limit is not None:
        infos = infos[: config.limit]
    stats = EpisodeStats(source=source, units=len(infos))
    if report is not None:
        stats.report.merge(report)
    built: dict[int, list[_Built]] = {k: [] for k in config.shots}
    stats.skipped = {k: Counter() for k in config.shots}
    for info in tqdm(infos, desc=f"{source} episodes", unit="concept", disable=not progress):
        concept = dataset.concept(info.name)
        views = (*concept.references, *concept.positives)
        unboxed = sum(1 for v in views if v.box is None)
        if unboxed:
            stats.report.add("view_without_box", concept.name, unboxed)
        seq = concept_sequence(concept.name, views)
        check = FrameChecker(seq, config, stats.report)
        usable = [i for i in range(len(seq)) if check(i) is not None]
        for i in usable:
            _record_box(stats, *check.usable(i))
        for k in config.shots:
            if len(usable) < k + 1:
                stats.skipped[k]["too_few_usable_frames" if usable or not unboxed else "no_boxes"] += 1
                continue
            supports = tuple(Support(seq.frames[i], check.usable(i)[0]) for i in usable[:k])
            for q in usable[k:]:
                meta = {"source": source, "sequence": concept.name, "k": k, "frames": [*usable[:k], q]}
                ep = Episode(f"{source}/{concept.name}/k{k}/q{q}", supports, seq.frames[q], check.usable(q)[0], meta)
                built[k].append(_Built(concept.name, ep))
                if k == config.shots[0]:
                    stats.objects_per_image[1] += 1
    return EpisodeSet(by_k=_add_negatives(built, config, stats), stats=stats)


def build_from_episodes(episodes: Sequence[Episode], config: EpisodeConfig, *, source: str = "episodes") -> EpisodeSet:
    """Re-cut existing episodes (JSONL/IPLoc files) to each k: the first k supports; fewer are skipped and counted.

    Only `partition` 'none' or 'random' (over episode ids) applies; negatives reuse other episodes' queries.
    """
    if config.partition == "category":
        raise ConfigError("--partition category needs a dataset with categories; episode files have none")
    infos = partition_infos([SequenceInfo(ep.id) for ep in episodes], config)
    keep = {i.name for i in infos}
    chosen = [ep for ep in episodes if ep.id in keep]
    if config.limit is not None:
        chosen = chosen[: config.limit]
    stats = EpisodeStats(source=source, units=len(chosen))
    built: dict[int, list[_Built]] = {k: [] for k in config.shots}
    stats.skipped = {k: Counter() for k in config.shots}
    for ep in chosen:
        for k in config.shots:
            if ep.k < k:
                stats.skipped[k]["fewer_supports_than_k"] += 1
                continue
            built[k].append(_Built(str(ep.meta.get("sequence", ep.id)), ep.with_shots(k)))
        if ep.query_box is not None:
            stats.objects_per_image[1] += 1
            stats.box_px_sizes.append(math.sqrt(ep.query_box.area))
    return EpisodeSet(by_k=_add_negatives(built, config, stats), stats=stats)


__all__ = [
    "BOX_SLACK_PX", "DEFAULT_FRACTIONS", "PARTS", "EpisodeConfig", "EpisodeSet", "EpisodeStats", "FrameChecker",
    "Part", "Partition", "build_concept_episodes", "build_from_episodes", "build_sequence_episodes",
    "concept_sequence", "partition_infos", "plot_statistics", "select_frames", "summarize_concepts",
    "summarize_episodes", "summarize_sequences", "uniform_pick",
]  # fmt: skip
