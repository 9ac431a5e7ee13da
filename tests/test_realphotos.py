"""The built-in real-photo episode set: well-formed, small, varied, and solvable by the matching engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PIL import Image

from focuskit.core.box import iou
from focuskit.core.episode import Episode
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.localizers import create_localizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return load_episodes(realphotos_episodes())


def test_shape_of_the_set(episodes: list[Episode]) -> None:
    assert 20 <= len(episodes) <= 40
    assert len({e.id for e in episodes}) == len(episodes)
    assert max(e.k for e in episodes) == 4 and min(e.k for e in episodes) == 1
    absent = [e for e in episodes if e.query_box is None]
    assert len(absent) >= 5 and len(absent) <= len(episodes) / 2
    assert sum(1 for e in episodes if e.k == 4 and e.query_box is not None) >= 10


def test_images_are_small_jpegs_with_boxes_inside(episodes: list[Episode]) -> None:
    folder = realphotos_episodes().parent
    files = sorted(folder.glob("*.jpg"))
    assert sum(f.stat().st_size for f in files) < 3_000_000
    modes = set()
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG" and max(img.size) <= 640, f.name
            modes.add(img.mode)
    assert modes == {"RGB", "L"}  # grayscale photos are in the set on purpose
    used = set()
    for ep in episodes:
        for s in ep.supports:
            s.box.validate(Image.open(s.image).size, where=f"{ep.id} support")
            used.add(Path(s.image).name)
        if ep.query_box is not None:
            ep.query_box.validate(Image.open(ep.query_image).size, where=f"{ep.id} query")
        used.add(Path(ep.query_image).name)
    assert used == {f.name for f in files}  # no stray files, no missing ones


def test_script_plan_matches_the_committed_episodes(episodes: list[Episode], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_realphotos", ROOT / "scripts" / "make_realphotos.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_realphotos", script)  # dataclasses look their module up there
    spec.loader.exec_module(script)
    plan = script.episode_plan()
    assert [p[0] for p in plan] == [e.id for e in episodes]
    assert [p[3] for p in plan] == [e.query_box is not None for e in episodes]


def test_matching_solves_a_sample_and_beats_template(episodes: list[Episode]) -> None:
    """A user running the built-in engine on these photos gets the objects and the rejections right."""
    chosen = {"box-190", "cup-95", "chessboard-left06", "motorcycle-left-right", "cup-absent-box",
              "parked-bike-absent-other-bike"}  # fmt: skip
    sample = [e.with_shots(min(2, e.k)) for e in episodes if e.id in chosen]
    scores = {}
    for engine in ("matching", "template"):
        loc = create_localizer(engine)
        scores[engine] = [iou(loc.localize(e.supports, e.query_image).box, e.query_box) for e in sample]
    matching = sum(scores["matching"]) / len(sample)
    assert matching >= 0.7
    assert matching > sum(scores["template"]) / len(sample)
    assert all(s == 1.0 for s, e in zip(scores["matching"], sample, strict=True) if e.query_box is None)
