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
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import ConfigError, DatasetError, ImageError
from focuskit.core.image import image_size
from focuskit.core.io import atomic_write_bytes
from focuskit.data.concept_set import ConceptDataset
from focuskit.data.sequences import DataReport, SequenceDataset, SequenceInfo, TrackSequence

Partition = Literal["none", "random", "category"]
Part = Literal["train", "val", "test"]
PARTS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, tuple[float, float, float]] = {
    "random": (0.8, 0.1, 0.1),
    "category": (0.5, 0.0, 0.5),  # LaSOT's unseen-category protocol: half the classes train, half test
}
BOX_SLACK_PX = 0.5
"""Boxes may cross the border by this much (rounding in xywh annotations) before they are clipped and counted."""


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are built. Filled from a YAML file (`load_config`) and/or command-line flags."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Support counts; one set of episodes per k."""
    negatives: int = 0
    """Negative episodes to add per k (supports of one sequence, query image of another, `query_box=None`)."""
    seed: int = 0
    partition: Partition = "none"
    """'random' splits sequences, 'category' splits their categories (so test categories are unseen in train)."""
    part: Part = "test"
    """Which part of the partition to build episodes from."""
    fractions: list[float] | None = None
    """train, val, test fractions of the partition; default 0.8,0.1,0.1 (random) or 0.5,0,0.5 (category)."""
    limit: int | None = None
    """Use only the first N sequences/concepts (after partitioning), for quick looks at big datasets."""
    check_images: bool = True
    """Read the header of every chosen frame: unreadable images and boxes outside the frame become unusable."""
    min_box_fraction: float = 0.0
    """Frames whose target box covers less than this fraction of the image are unusable (0 = keep all)."""
    query_gap: int = 0
    """Frames right before the query that may not be supports (0 = the paper's rule: any earlier usable frame)."""

    def __post_init__(self) -> None:
        if not self.shots or any(k < 1 for k in self.shots):
            raise ConfigError(f"shots must be integers >= 1, got {self.shots}")
        object.__setattr__(self, "shots", sorted(set(self.shots)))
        if self.negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {self.negatives}")
        if self.partition not in ("none", "random", "category"):
            raise ConfigError(f"partition must be none, random or category, got {self.partition!r}")
        if self.part not in PARTS:
            raise ConfigError(f"part must be one of {', '.join(PARTS)}, got {self.part!r}")
        if self.fractions is not None:
            if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
                raise ConfigError(f"fractions must be three numbers >= 0 (train,val,test), got {self.fractions}")
            if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6):
                raise ConfigError(f"fractions must sum to 1, got {self.fractions} (sum {sum(self.fractions):.3f})")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if not 0.0 <= self.min_box_fraction < 1.0:
            raise ConfigError(f"min_box_fraction must be in [0, 1), got {self.min_box_fraction}")
        if self.query_gap < 0:
            raise ConfigError(f"query_gap must be >= 0, got {self.query_gap}")

    def split_fractions(self) -> tuple[float, float, float]:
        if self.fractions is not None:
            return (self.fractions[0], self.fractions[1], self.fractions[2])
        return DEFAULT_FRACTIONS.get(self.partition, (0.0, 0.0, 1.0))


# --- partitions -----------------------------------------------------------------------------------------------
def partition_infos(infos: Sequence[SequenceInfo], config: EpisodeConfig) -> list[SequenceInfo]:
    """The sequences (or concepts) in `config.part` of a seeded train/val/test partition, in the input order.

    'random' assigns sequences; 'category' assigns whole categories, so no category of the test part appears in
    train (the LaSOT unseen-category protocol). Every sequence needs a category for the latter.
    """
    if config.partition == "none":
        return list(infos)
    if config.partition == "category":
        missing = [i.name for i in infos if not i.category]
        if missing:
            raise DatasetError(
                f"--partition category needs a category for every sequence; {len(missing)} have none "
                f"(e.g. {missing[0]!r}); use --partition random"
            )
        keys = sorted({str(i.category) for i in infos})
    else:
        keys = sorted(i.name for i in infos)
    f_train, f_val, _ = config.split_fractions()
    order = [keys[j] for j in np.random.default_rng(config.seed).permutation(len(keys))]
    n_train = min(len(keys), round(f_train * len(keys)))
    n_val = min(len(keys) - n_train, round(f_val * len(keys)))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(keys))}
    lo, hi = bounds[config.part]
    chosen = set(order[lo:hi])
    key_of = (lambda i: str(i.category)) if config.partition == "category" else (lambda i: i.name)
    return [i for i in infos if key_of(i) in chosen]


# --- statistics -----------------------------------------------------------------------------------------------
@dataclass
class EpisodeStats:
    """What was built and what was skipped, for printing and for the JSON/PNG outputs."""

    source: str
    units: int = 0
    """Sequences (or concepts) considered after partition and limit."""
    episodes: dict[int, int] = field(default_factory=dict)
    negatives: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, Counter[str]] = field(default_factory=dict)
    """Per k: sequences/concepts that gave no episode, by reason."""
    report: DataReport = field(default_factory=DataReport)
    """Frames and files the readers and the builder skipped or repaired, by reason."""
    objects_per_image: Counter[int] = field(default_factory=Counter)
    """Annotated objects (target + distractors) in each positive query image."""
    box_rel_sizes: list[float] = field(default_factory=list)
    """sqrt(box area / image area) of every distinct target box used, where the image size is known."""
    box_px_sizes: list[float] = field(default_factory=list)
    """sqrt(box area) in pixels of every distinct target box used."""

    def to_json(self) -> dict[str, Any]:
        def hist(values: list[float], bins: Sequence[float]) -> dict[str, Any]:
            counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(bins))
            return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}

        return {
            "source": self.source,
            "units": self.units,
            "episodes": {str(k): v for k, v in self.episodes.items()},
            "negatives": {str(k): v for k, v in self.negatives.items()},
            "skipped": {str(k): dict(c) for k, c in self.skipped.items()},
            "issues": self.report.to_json(),
            "objects_per_image": {str(n): c for n, c in sorted(self.objects_per_image.items())},
            "box_relative_size": hist(self.box_rel_sizes, np.linspace(0, 1, 11)),
            "box_pixel_size": hist(self.box_px_sizes, [0, 16, 32, 64, 128, 256, 512, 1024, 1e9]),
        }

    def lines(self) -> list[str]:
        out = [f"{self.source}: {self.units} sequence(s)/concept(s) considered"]
        for k in sorted(self.episodes):
            neg = self.negatives.get(k, 0)
            skipped = self.skipped.get(k, Counter())
            line = f"k={k}: {self.episodes[k]} episode(s)" + (f" + {neg} negative(s)" if neg else "")
            if skipped:
                line += "; skipped " + ", ".join(f"{n} ({r})" for r, n in sorted(skipped.items()))
            out.append(line)
        if self.objects_per_image:
            total = sum(self.objects_per_image.values())
            mean = sum(n * c for n, c in self.objects_per_image.items()) / total
            dist = ", ".join(f"{n}: {c}" for n, c in sorted(self.objects_per_image.items()))
            out.append(f"objects per query image: mean {mean:.2f} ({dist})")
        if self.box_rel_sizes:
            q = np.percentile(self.box_rel_sizes, [10, 50, 90])
            out.append(f"box size sqrt(box/image): p10 {q[0]:.3f}, median {q[1]:.3f}, p90 {q[2]:.3f}")
        if self.report:
            out.append("skipped or repaired: " + "; ".join(self.report.lines()))
        return out


def plot_statistics(stats: EpisodeStats, path: str | Path) -> None:
    """Write a PNG with the box-size histogram and the objects-per-image counts (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_size, ax_obj = fig.subplots(1, 2)
    if stats.box_rel_sizes:
        ax_size.hist(stats.box_rel_sizes, bins=np.linspace(0, 1, 21), color="#3274a1")
        ax_size.set_xlabel("target box size, sqrt(box area / image area)")
    else:
        ax_size.hist(stats.box_px_sizes or [0.0], bins=20, color="#3274a1")
        ax_size.set_xlabel("target box size, sqrt(box area) in pixels")
    ax_size.set_ylabel("boxes")
    ax_size.set_title(f"{stats.source}: {len(stats.box_px_sizes)} target boxes")
    counts = sorted(stats.objects_per_image.items())
    ax_obj.bar([str(n) for n, _ in counts], [c for _, c in counts], color="#e1812c")
    ax_obj.set_xlabel("annotated objects in the query image")
    ax_obj.set_ylabel("episodes")
    ax_obj.set_title("objects per image")
    for ax in (ax_size, ax_obj):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


# --- frame checks and sampling --------------------------------------------------------------------------------
class FrameChecker:
    """Decides, once per frame, whether a frame's target box is usable; repairs boxes slightly outside the frame."""

    def __init__(self, seq: TrackSequence, config: EpisodeConfig, report: DataReport) -> None:
        self.seq = seq
        self.config = config
        self.report = report
        self._cache: dict[int, tuple[Box, tuple[int, int] | None] | None] = {}

    def size(self, i: int) -> tuple[int, int] | None:
        if self.config.check_images:
            try:
                return image_size(self.seq.frames[i])
            except ImageError:
                return None
        return None if self.seq.frame_sizes is None else self.seq.frame_sizes[i]

    def __call__(self, i: int) -> tuple[Box, tuple[int, int] | None] | None:
        if i not in self._cache:
            self._cache[i] = self._check(i)
        return self._cache[i]

    def usable(self, i: int) -> tuple[Box, tuple[int, int] | None]:
        """The checked (box, size) of a frame already found usable; calling it on another frame is a bug."""
        checked = self(i)
        if checked is None:
            raise RuntimeError(f"frame {i} of {self.seq.name!r} is not usable; select frames before reading boxes")
        return checked

    def _check(self, i: int) -> tuple[Box, tuple[int, int] | None] | None:
        box = self.seq.boxes[i]
        where = f"{self.seq.name} frame {i} ({self.seq.frames[i]})"
        if box is None:
            return None
        size = self.size(i)
        if size is None and self.config.check_images:
            self.report.add("unreadable_image", str(self.seq.frames[i]))
            return None
        if size is not None:
            w, h = size
            if box.x1 >= w or box.y1 >= h or box.x2 <= 0 or box.y2 <= 0:
                self.report.add("box_outside_frame", where)
                return None
            if (
                box.x1 < -BOX_SLACK_PX
                or box.y1 < -BOX_SLACK_PX
                or box.x2 > w + BOX_SLACK_PX
                or box.y2 > h + BOX_SLACK_PX
            ):
                self.report.add("box_clipped_to_frame", where)
            box = box.clip(size)
            if box.area <= 0:
                self.report.add("box_outside_frame", where)
                return None
            if box.area < self.config.min_box_fraction * w * h:
                self.report.add("box_too_small", where)
                return None
        return box, size


def uniform_pick(pool: Sequence[int], k: int) -> list[int]:
    """k frame indices from the sorted `pool`, spread evenly in time from its first to its last entry.

    Targets are `linspace(pool[0], pool[-1], k)`; each is snapped to the nearest pool entry not taken yet
    (the earlier one on ties). Requires `len(pool) >= k`.
    """
    if k == 1:
        return [pool[0]]
    taken: list[int] = []
    free = list(pool)
    for target in np.linspace(pool[0], pool[-1], k):
        j = min(range(len(free)), key=lambda m: (abs(free[m] - target), free[m]))
        taken.append(free.pop(j))
    return sorted(taken)


def select_frames(seq: TrackSequence, k: int, check: FrameChecker, query_gap: int = 0) -> tuple[list[int], int] | str:
    """(support frames, query frame) for one sequence and k, or the reason it has none."""
    bad: set[int] = set()
    usable = seq.usable_indices()
    while True:
        cand = [i for i in usable if i not in bad]
        if seq.query_index is not None:
            q = seq.query_index
            if q not in cand:
                return "query_frame_unusable"
        elif not cand:
            return "no_usable_frame"
        else:
            q = cand[-1]
        if check(q) is None:
            bad.add(q)
            if seq.query_index is not None:
                return "query_frame_unusable"
            continue
        pool = [i for i in cand if i != q and abs(i - q) > query_gap]
        if len(pool) < k:
            return "too_few_usable_frames"
        picks = uniform_pick(pool, k)
        failed = [i for i in picks if check(i) is None]
        if not failed:
            return picks, q
        bad.update(failed)


# --- building ---------------------------------------------------------------------------------------------------
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


# --- dataset summaries (`focuskit data stats`) -----------------------------------------------------------------
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
