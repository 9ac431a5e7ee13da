"""The toy's episode pools (benchmarks/toy/pool.py) and paired differences (benchmarks/toy/report.py)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.toy.pool import render_pool, sample_episodes
from benchmarks.toy.report import paired
from focuskit.data.synth import SynthConfig


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> list:
    config = SynthConfig(objects=2, seed=5, image_size=56, backgrounds=("gradient",), min_scale=0.2, max_scale=0.3)
    return render_pool(config, tmp_path_factory.mktemp("pool"), instances=3, frames=5)


def test_episodes_are_ordered_subsets_of_one_instances_frames(pool: list) -> None:
    frames = {f.path: (i, f) for i, inst in enumerate(pool) for f in inst.frames}
    for ep in sample_episodes(pool, 40, shots=(1, 4), seed=0):
        owners = {frames[s.image][0] for s in ep.supports} | {frames[ep.query_image][0]}
        assert len(owners) == 1  # supports and query show the same instance
        assert ep.query_image not in [s.image for s in ep.supports]  # the query is a new pose
        assert 1 <= ep.k <= 4 and len({s.image for s in ep.supports}) == ep.k
        query = frames[ep.query_image][1]
        assert ep.query_box == query.boxes[0] and ep.meta["query_distractors"] == [query.boxes[1].as_list()]


def test_copy_episodes_ask_for_a_support_frame(pool: list) -> None:
    for ep in sample_episodes(pool, 10, shots=(2, 3), seed=1, copy_rate=1.0):
        assert ep.meta["copy"] and ep.query_image in [s.image for s in ep.supports]


def test_swapped_roles_keep_one_object_per_episode_and_use_both(pool: list) -> None:
    frames = {f.path: f for inst in pool for f in inst.frames}
    roles = []
    for ep in sample_episodes(pool, 60, shots=(1, 4), seed=2, swap_roles=True):
        role = ep.meta["role"]
        roles.append(role)
        assert all(s.box == frames[s.image].boxes[role] for s in ep.supports)
        assert ep.query_box == frames[ep.query_image].boxes[role]
        assert ep.meta["query_distractors"] == [frames[ep.query_image].boxes[1 - role].as_list()]
    assert 0.25 < statistics.fmean(roles) < 0.75


def test_distinct_episodes_use_every_instance_once(pool: list) -> None:
    eps = sample_episodes(pool, 3, shots=(4, 4), seed=3, distinct=True)
    assert [ep.supports[0].image.name.split("_")[1] for ep in eps] == ["000000", "000001", "000002"]


def test_paired_difference_is_the_mean_per_episode_difference_and_base_pairs_with_every_seed() -> None:
    def row(name: str, seed: int, ious: list[float]) -> dict:
        return {"name": name, "seed": seed, "per_episode_iou": {4: ious}}

    rows = [row("base", 0, [0.1, 0.2, 0.3]), row("sft", 0, [0.3, 0.2, 0.6]), row("sft", 1, [0.5, 0.2, 0.4])]
    got = paired(rows, "sft", "base", (4,), "per_episode_iou")
    per_episode = [(0.2 + 0.4) / 2, 0.0, (0.3 + 0.1) / 2]
    assert got is not None and got["seeds"] == 2 and got["episodes"] == 3
    assert got["diff"] == pytest.approx(statistics.fmean(per_episode))
    assert got["se"] == pytest.approx(statistics.stdev(per_episode) / 3**0.5)
    assert paired(rows, "sft", "missing", (4,), "per_episode_iou") is None


def test_visible_lookalikes_differ_only_in_colour_or_pattern() -> None:
    import numpy as np

    from benchmarks.toy.pool import VISIBLE_GROUPS, mutate_within
    from focuskit.data.synth import random_appearance

    rng = np.random.default_rng(0)
    for _ in range(50):
        base = random_appearance(rng)
        out = mutate_within(base, rng, int(rng.integers(1, 3)), VISIBLE_GROUPS)
        assert (out.frequency, out.angle, out.mark, out.mark_color) == (base.frequency, base.angle, base.mark,
                                                                         base.mark_color)  # fmt: skip
        assert (out.color, out.pattern, out.pattern_color) != (base.color, base.pattern, base.pattern_color)


def test_oracle_cell_weights_cover_the_box_and_sum_to_one() -> None:
    from benchmarks.toy.oracle import cell_weights
    from focuskit.core.box import Box

    w = cell_weights(Box(0, 0, 56, 28), grid=4, size=112)  # the top half of the first two cells' row
    assert w.sum() == pytest.approx(1.0)
    assert w.reshape(4, 4)[0, :2] == pytest.approx([0.5, 0.5]) and w.reshape(4, 4)[1:].sum() == 0


def test_fixed_roles_give_a_position_balanced_pair_on_the_same_frames(pool: list) -> None:
    first = sample_episodes(pool, 3, shots=(2, 2), seed=4, distinct=True, role=0)
    second = sample_episodes(pool, 3, shots=(2, 2), seed=4, distinct=True, role=1)
    for a, b in zip(first, second, strict=True):
        assert a.query_image == b.query_image and [s.image for s in a.supports] == [s.image for s in b.supports]
        assert a.meta["query_distractors"] == [b.query_box.as_list()]
        assert b.meta["query_distractors"] == [a.query_box.as_list()]


def test_alone_scale_renders_solo_objects_at_their_own_size_and_leaves_shared_frames(tmp_path: Path) -> None:
    config = SynthConfig(objects=2, seed=6, image_size=56, backgrounds=("gradient",), min_scale=0.2, max_scale=0.3)
    small = render_pool(config, tmp_path / "small", instances=2, frames=3, alone=2)
    large = render_pool(config, tmp_path / "large", instances=2, frames=3, alone=2, alone_scale=(0.6, 0.7))
    for a, b in zip(small, large, strict=True):
        assert [f.boxes for f in a.frames] == [f.boxes for f in b.frames]  # the two-object frames do not change
        for solo in b.alone:
            for f in solo:
                (box,) = f.boxes
                assert max(box.width, box.height) >= 0.5 * 56  # the object fills most of the frame
        assert max(max(f.boxes[0].width, f.boxes[0].height) for s in a.alone for f in s) <= 0.4 * 56
