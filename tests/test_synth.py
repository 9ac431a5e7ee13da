"""Synthetic episodes: seeded, valid boxes, same-shape look-alikes, absent queries, bad configs refused."""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box, box_iou_batch
from focuskit.core.errors import ConfigError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import (
    SynthConfig,
    generate_episode,
    mutate_appearance,
    random_appearance,
    render_frame,
    write_synth_dataset,
)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.*")}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    config = SynthConfig(episodes=4, shots=2, seed=7, absent_rate=0.5)
    write_synth_dataset(config, tmp_path / "a", progress=False)
    write_synth_dataset(config, tmp_path / "b", progress=False)
    write_synth_dataset(SynthConfig(episodes=4, shots=2, seed=8, absent_rate=0.5), tmp_path / "c", progress=False)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert len(a) == 1 + 4 * 3
    assert a["episodes.jsonl"] != c["episodes.jsonl"]


def test_more_episodes_only_appends() -> None:
    small = SynthConfig(episodes=2, seed=3)
    large = SynthConfig(episodes=5, seed=3)
    for i in range(2):
        a, b = generate_episode(small, i), generate_episode(large, i)
        assert a.query_box == b.query_box
        assert np.array_equal(np.asarray(a.query), np.asarray(b.query))


def test_written_episodes_load_with_valid_boxes_inside_images(tmp_path: Path) -> None:
    config = SynthConfig(episodes=6, shots=3, seed=1, image_size=96)
    path = write_synth_dataset(config, tmp_path, progress=False)
    episodes = load_episodes(path)
    assert len(episodes) == 6
    for ep in episodes:
        assert ep.k == 3
        for s in ep.supports:
            assert Image.open(s.image).size == (96, 96)
            s.box.validate((96, 96))
        assert ep.query_box is not None
        ep.query_box.validate((96, 96))
        assert len(ep.meta["query_distractors"]) == 2


class _Black:
    def make(self, kind: str, size: int, rng: np.random.Generator) -> Image.Image:
        return Image.new("RGB", (size, size))


def test_boxes_are_tight_around_drawn_objects() -> None:
    config = SynthConfig(objects=1, brightness_jitter=0.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        app = random_appearance(rng)
        img, (box,) = render_frame(config, "star", [app], rng, _Black())  # type: ignore[arg-type]
        ys, xs = np.nonzero(np.asarray(img).max(axis=2) > 60)
        drawn = Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert box_iou_batch([box], [drawn])[0, 0] > 0.85


def test_objects_in_a_frame_do_not_overlap() -> None:
    config = SynthConfig(episodes=1, objects=4, seed=0, min_scale=0.15, max_scale=0.3)
    for i in range(10):
        ep = generate_episode(config, i)
        boxes = [ep.query_box, *(Box.from_xyxy(b) for b in ep.meta["query_distractors"])]
        ious = box_iou_batch(boxes, boxes)
        assert np.allclose(ious - np.eye(len(boxes)), 0.0)


@pytest.mark.parametrize("seed", range(30))
def test_lookalikes_differ_from_the_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = random_appearance(rng)
    assert mutate_appearance(base, rng, 1) != base


@pytest.mark.parametrize(("rate", "expect_absent"), [(0.0, 0), (1.0, 12)])
def test_absent_rate_extremes(rate: float, expect_absent: int) -> None:
    config = SynthConfig(episodes=12, absent_rate=rate, seed=2)
    eps = [generate_episode(config, i) for i in range(12)]
    assert sum(ep.query_box is None for ep in eps) == expect_absent
    # An absent query still shows the look-alikes, so "any object of that shape" is the wrong answer.
    assert all(len(ep.meta["query_distractors"]) == 2 for ep in eps)


def test_absent_rate_mixes(tmp_path: Path) -> None:
    config = SynthConfig(episodes=30, shots=1, absent_rate=0.5, seed=4, image_size=48)
    eps = load_episodes(write_synth_dataset(config, tmp_path, progress=False))
    n_absent = sum(ep.query_box is None for ep in eps)
    assert 5 <= n_absent <= 25


def _crop_hist(img: Image.Image, box: Box) -> np.ndarray:
    crop = np.asarray(img.crop(tuple(round(v) for v in box.to_xyxy())).convert("RGB"), dtype=np.int64) // 64
    codes = crop[..., 0] * 16 + crop[..., 1] * 4 + crop[..., 2]
    hist = np.bincount(codes.ravel(), minlength=64).astype(np.float64)
    return hist / hist.sum()


def test_instance_appearance_identifies_the_target() -> None:
    """A crude color-histogram matcher beats chance: the supports carry the instance, so the task is solvable."""
    config = SynthConfig(episodes=1, shots=1, objects=3, seed=11, backgrounds=("gradient",))
    hits = 0
    n = 40
    for i in range(n):
        ep = generate_episode(config, i)
        img, box = ep.supports[0]
        ref = _crop_hist(img, box)
        assert ep.query_box is not None
        cands = [ep.query_box, *(Box.from_xyxy(b) for b in ep.meta["query_distractors"])]
        scores = [np.minimum(ref, _crop_hist(ep.query, c)).sum() for c in cands]
        hits += int(np.argmax(scores) == 0)
    assert hits / n > 0.6  # chance is 1/3


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({}, nullcontext()),
        ({"episodes": 0}, pytest.raises(ConfigError, match="episodes must be >= 1")),
        ({"shots": 0}, pytest.raises(ConfigError, match="shots must be >= 1")),
        ({"objects": 0}, pytest.raises(ConfigError, match="objects must be >= 1")),
        ({"absent_rate": 1.5}, pytest.raises(ConfigError, match=r"absent_rate must be in \[0, 1\]")),
        ({"absent_rate": 0.5, "objects": 1}, pytest.raises(ConfigError, match="needs objects >= 2")),
        ({"image_size": 16}, pytest.raises(ConfigError, match="image_size must be >= 32")),
        ({"min_scale": 0.5, "max_scale": 0.4}, pytest.raises(ConfigError, match="min_scale <= max_scale")),
        ({"objects": 20, "min_scale": 0.3, "max_scale": 0.4}, pytest.raises(ConfigError, match="cannot fit")),
        ({"backgrounds": ("plasma",)}, pytest.raises(ConfigError, match="backgrounds must be")),
    ],
)
def test_config_validation(kwargs: dict, expectation: AbstractContextManager) -> None:
    with expectation:
        SynthConfig(**kwargs)


def test_cli_writes_episodes_and_refuses_bad_values(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from focuskit.cli.main import app

    runner = CliRunner()
    args = ["data", "synth", "--out", str(tmp_path / "s"), "--episodes", "3", "--shots", "2", "--quiet"]
    result = runner.invoke(app, [*args, "--absent-rate", "0.5", "--objects", "2", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    episodes = load_episodes(tmp_path / "s" / "episodes.jsonl")
    assert len(episodes) == 3 and all(ep.k == 2 for ep in episodes)
    assert Image.open(episodes[0].query_image).size == (64, 64)
    bad = runner.invoke(app, [*args, "--absent-rate", "2"])
    assert bad.exit_code == 2
    assert "focuskit: error: absent_rate must be in [0, 1], got 2.0" in bad.output
