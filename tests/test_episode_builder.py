"""The FOCUS episode construction on in-memory sequences: sampling, partitions, negatives, statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.config import load_config
from focuskit.core.errors import ConfigError, DatasetError
from focuskit.data.episode_builder import (
    EpisodeConfig,
    build_sequence_episodes,
    partition_infos,
    plot_statistics,
    uniform_pick,
)
from focuskit.data.sequences import DataReport, SequenceDataset, SequenceInfo, TrackSequence

SIZE = (100, 80)


def make_seq(
    name: str, n: int, *, hidden: tuple[int, ...] = (), category: str | None = "cat", box_side: float = 20
) -> TrackSequence:
    return TrackSequence(
        name=name,
        frames=tuple(Path(f"/nonexistent/{name}/{i:04d}.jpg") for i in range(n)),
        boxes=tuple(Box(i, 10, i + box_side, 10 + box_side) for i in range(n)),
        visible=tuple(i not in hidden for i in range(n)),
        category=category,
        frame_sizes=(SIZE,) * n,
    )


class MemoryDataset:
    """A `SequenceDataset` over sequences held in memory."""

    format_name = "memory"
    root = Path("/nonexistent")
    split = "all"

    def __init__(self, seqs: list[TrackSequence]) -> None:
        self.seqs = {s.name: s for s in seqs}
        self.report = DataReport()

    def index(self) -> list[SequenceInfo]:
        return [SequenceInfo(s.name, s.category) for s in sorted(self.seqs.values(), key=lambda s: s.name)]

    def load(self, name: str) -> TrackSequence | None:
        return self.seqs.get(name)


def offline(**kwargs: object) -> EpisodeConfig:
    return EpisodeConfig(check_images=False, **kwargs)  # type: ignore[arg-type]


def test_memory_dataset_satisfies_the_protocol() -> None:
    assert isinstance(MemoryDataset([]), SequenceDataset)


@pytest.mark.parametrize(
    ("pool", "k", "expected"),
    [
        (list(range(10)), 1, [0]),
        (list(range(10)), 2, [0, 9]),
        (list(range(10)), 4, [0, 3, 6, 9]),
        ([0, 1, 2, 100], 3, [0, 2, 100]),  # the middle target (50) snaps to the nearest usable frame
        ([0, 10, 11], 3, [0, 10, 11]),
        ([5, 6], 2, [5, 6]),
    ],
)
def test_uniform_pick_table(pool: list[int], k: int, expected: list[int]) -> None:
    assert uniform_pick(pool, k) == expected


@given(st.sets(st.integers(0, 500), min_size=1, max_size=40), st.integers(1, 40))
def test_uniform_pick_properties(pool_set: set[int], k: int) -> None:
    pool = sorted(pool_set)
    k = min(k, len(pool))
    picks = uniform_pick(pool, k)
    assert len(picks) == k == len(set(picks))
    assert picks == sorted(picks) and set(picks) <= set(pool)
    assert picks[0] == pool[0]
    if k >= 2:
        assert picks[-1] == pool[-1]  # the last support is the last usable frame before the query


def test_supports_are_resampled_per_k() -> None:
    ds = MemoryDataset([make_seq("a", 21, hidden=(20,))])
    result = build_sequence_episodes(ds, offline(shots=[1, 2, 4]), progress=False)
    frames = {k: result.by_k[k][0].meta["frames"] for k in (1, 2, 4)}
    assert frames == {1: [0, 19], 2: [0, 18, 19], 4: [0, 6, 12, 18, 19]}
    # the 2-shot episode is not the first two supports of the 4-shot one
    assert frames[2][:2] != frames[4][:2]


def test_min_box_fraction_makes_small_targets_unusable() -> None:
    ds = MemoryDataset([make_seq("a", 6, box_side=4)])
    result = build_sequence_episodes(ds, offline(shots=[1], min_box_fraction=0.01), progress=False)
    assert result.total() == 0 and result.stats.report.counts["box_too_small"] >= 1


def test_negative_episodes_pair_supports_with_another_sequences_query() -> None:
    seqs = [make_seq(f"s{i}", 8) for i in range(4)]
    cfg = offline(shots=[2], negatives=5, seed=3)
    result = build_sequence_episodes(MemoryDataset(seqs), cfg, progress=False)
    episodes = result.by_k[2]
    positives = {e.meta["sequence"]: e for e in episodes if not e.meta.get("negative")}
    negatives = [e for e in episodes if e.meta.get("negative")]
    assert len(positives) == 4 and len(negatives) == 5 == result.stats.negatives[2]
    assert len({e.id for e in episodes}) == len(episodes)
    for neg in negatives:
        assert neg.query_box is None
        assert neg.meta["query_from"] != neg.meta["sequence"]
        assert neg.supports == positives[neg.meta["sequence"]].supports
        assert neg.query_image == positives[neg.meta["query_from"]].query_image
    again = build_sequence_episodes(MemoryDataset(seqs), cfg, progress=False).by_k[2]
    assert [(e.id, e.query_image) for e in again] == [(e.id, e.query_image) for e in episodes]


def test_negatives_need_two_sequences() -> None:
    result = build_sequence_episodes(MemoryDataset([make_seq("a", 5)]), offline(shots=[1], negatives=2), progress=False)
    assert result.stats.negatives[1] == 0
    assert result.stats.report.counts["negatives_need_two_sequences"] == 2


def test_random_partition_is_disjoint_complete_and_seeded() -> None:
    infos = [SequenceInfo(f"s{i:02d}", "c") for i in range(20)]
    parts = {
        p: partition_infos(infos, EpisodeConfig(partition="random", part=p, seed=5)) for p in ("train", "val", "test")
    }
    names = [set(i.name for i in v) for v in parts.values()]
    assert sum(len(n) for n in names) == 20 and set.union(*names) == {i.name for i in infos}
    assert [len(v) for v in parts.values()] == [16, 2, 2]
    other_seed = partition_infos(infos, EpisodeConfig(partition="random", part="test", seed=6))
    assert {i.name for i in other_seed} != {i.name for i in parts["test"]}


def test_category_partition_needs_categories() -> None:
    infos = [SequenceInfo("a", "x"), SequenceInfo("b", None)]
    with pytest.raises(DatasetError, match="category"):
        partition_infos(infos, EpisodeConfig(partition="category"))


def test_limit_applies_after_partition() -> None:
    seqs = [make_seq(f"s{i}", 4) for i in range(6)]
    result = build_sequence_episodes(MemoryDataset(seqs), offline(shots=[1], limit=2), progress=False)
    assert [e.meta["sequence"] for e in result.by_k[1]] == ["s0", "s1"] and result.stats.units == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shots": [0, 1]},
        {"shots": []},
        {"negatives": -1},
        {"partition": "by-color"},
        {"part": "dev"},
        {"fractions": [0.5, 0.5]},
        {"fractions": [0.5, 0.2, 0.2]},
        {"limit": 0},
        {"min_box_fraction": 1.5},
        {"query_gap": -1},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EpisodeConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "episodes.yaml"
    path.write_text("shots: [4, 1]\nnegatives: 3\npartition: category\n")
    cfg = load_config(EpisodeConfig, path)
    assert cfg.shots == [1, 4] and cfg.negatives == 3 and cfg.split_fractions() == (0.5, 0.0, 0.5)
    path.write_text("shot: [1]\n")
    with pytest.raises(ConfigError, match="shot"):
        load_config(EpisodeConfig, path)


def test_statistics_and_histogram_png(tmp_path: Path) -> None:
    seqs = [make_seq("a", 6), make_seq("b", 6, box_side=40)]
    result = build_sequence_episodes(MemoryDataset(seqs), offline(shots=[1, 2]), progress=False)
    stats = result.stats
    # distinct target boxes used: seq a frames {0, 4, 5}, seq b frames {0, 4, 5}
    assert len(stats.box_px_sizes) == 6 and len(stats.box_rel_sizes) == 6
    hist = stats.to_json()["box_relative_size"]
    assert sum(hist["counts"]) == 6
    assert any("k=2: 2 episode(s)" in line for line in stats.lines())
    png = tmp_path / "stats.png"
    plot_statistics(stats, png)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 100
