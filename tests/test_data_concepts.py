"""Concept-folder readers (MyVLM, Yo'LLaVA, This-Is-My-Img, generic) into the one ConceptDataset type."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.concepts import read_concept_folders, read_myvlm, read_this_is_my, read_yollava
from focuskit.data.episode_builder import EpisodeConfig, build_concept_episodes
from focuskit.data.sequences import DataReport


def images(folder: Path, names: list[str], size: tuple[int, int] = (24, 20)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size[1], size[0], 3), 30 * i, dtype=np.uint8)).save(folder / name)


def test_myvlm_first_four_photos_are_references(tmp_path: Path) -> None:
    images(tmp_path / "data" / "sheep plush", [f"{i}.jpg" for i in range(7)])
    (tmp_path / "data" / "sheep plush" / "captions.json").write_text("{}")
    images(tmp_path / "data" / "red piggy bank", ["a.jpg", "b.jpg"])
    (tmp_path / "data" / "empty").mkdir()
    report = DataReport()
    ds = read_myvlm(tmp_path, report=report)
    sheep = ds.concept("sheep plush")
    assert [v.image.name for v in sheep.references] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert [v.image.name for v in sheep.positives] == ["4.jpg", "5.jpg", "6.jpg"]
    assert len(ds.concept("red piggy bank").references) == 2
    assert report.counts["empty_concept_folder"] == 1


def test_yollava_train_and_test(tmp_path: Path) -> None:
    images(tmp_path / "train" / "bo", ["0.png", "1.png", "2.png"])
    images(tmp_path / "test" / "bo", ["5.png"])
    images(tmp_path / "train" / "mam", ["0.png"])
    ds = read_yollava(tmp_path)
    assert [c.name for c in ds.concepts] == ["bo", "mam"]
    assert len(ds.concept("bo").references) == 3 and [v.image.name for v in ds.concept("bo").positives] == ["5.png"]
    assert ds.concept("mam").positives == ()


@pytest.mark.parametrize(("ref_name", "test_name"), [("train", "test"), ("Reference Images", "Validation")])
def test_this_is_my_splits(tmp_path: Path, ref_name: str, test_name: str) -> None:
    base = tmp_path / "This-is-My-Img" / "Single-concept"
    images(base / ref_name / "Alexs hat", ["r0.png", "r1.png"])
    images(base / test_name / "Positive" / "Alexs hat", ["p0.jpg"])
    images(base / test_name / "Negative (Hard)" / "Alexs hat", ["h0.jpg", "h1.jpg"])
    images(base / test_name / "Negative (Other)" / "Alexs hat", ["o0.webp"])
    images(base / test_name / "Fake" / "Alexs hat", ["f0.png"])
    ds = read_this_is_my(tmp_path / "This-is-My-Img")
    hat = ds.concept("Alexs hat")
    assert [v.image.name for v in hat.references] == ["r0.png", "r1.png"]
    assert [v.image.name for v in hat.positives] == ["p0.jpg"]
    assert {k: [p.name for p in v] for k, v in hat.negatives.items()} == {
        "fake": ["f0.png"],
        "hard": ["h0.jpg", "h1.jpg"],
        "other": ["o0.webp"],
    }


def test_this_is_my_multi_concept_test_folders_are_positives(tmp_path: Path) -> None:
    base = tmp_path / "Multi-concept"
    images(base / "train" / "Zak-man", ["a.png"])
    images(base / "test" / "Zak-man", ["t.png"])
    ds = read_this_is_my(tmp_path, variant="multi")
    assert [v.image.name for v in ds.concept("Zak-man").positives] == ["t.png"]


def test_generic_folders_with_boxes_masks_and_context(tmp_path: Path) -> None:
    mug = tmp_path / "my mug"
    images(mug / "references", ["a.jpg", "b.jpg", "c.jpg"])
    images(mug / "positives", ["p.jpg"])
    images(mug / "negatives" / "hard", ["n.jpg"])
    (mug / "boxes.json").write_text(json.dumps({"references/a.jpg": [1, 2, 10, 12], "positives/p.jpg": [3, 3, 9, 9]}))
    mask = np.zeros((20, 24), dtype=np.uint8)
    mask[5:15, 4:8] = 255
    (mug / "masks" / "references").mkdir(parents=True)
    Image.fromarray(mask).save(mug / "masks" / "references" / "b.png")
    (mug / "context.txt").write_text("blue with a chipped handle\n")
    ds = read_concept_folders(tmp_path)
    c = ds.concept("my mug")
    assert [v.box for v in c.references] == [Box(1, 2, 10, 12), Box(4, 5, 8, 15), None]
    assert c.context == "blue with a chipped handle"
    assert [p.name for p in c.negatives["hard"]] == ["n.jpg"]
    result = build_concept_episodes(ds, EpisodeConfig(shots=[2]), progress=False)
    (ep,) = result.by_k[2]
    assert [s.box for s in ep.supports] == [Box(1, 2, 10, 12), Box(4, 5, 8, 15)]
    assert ep.query_image.name == "p.jpg" and ep.query_box == Box(3, 3, 9, 9)
    assert result.stats.report.counts["view_without_box"] == 1


def test_generic_bad_box_names_file_and_key(tmp_path: Path) -> None:
    images(tmp_path / "x" / "references", ["a.jpg"])
    (tmp_path / "x" / "boxes.json").write_text(json.dumps({"references/a.jpg": [5, 5, 5, 9]}))
    with pytest.raises(DatasetError, match=r"boxes\.json.*references/a\.jpg"):
        read_concept_folders(tmp_path)


def test_concept_sets_without_boxes_give_no_episodes(tmp_path: Path) -> None:
    images(tmp_path / "train" / "bo", ["0.png", "1.png"])
    result = build_concept_episodes(read_yollava(tmp_path), EpisodeConfig(shots=[1]), progress=False)
    assert result.total() == 0 and result.stats.skipped[1]["no_boxes"] == 1


@pytest.mark.parametrize(
    ("reader", "missing"),
    [
        (read_yollava, "train"),
        (read_this_is_my, "train"),
        (read_concept_folders, "references"),
        (read_myvlm, "data"),
    ],
)
def test_wrong_root_names_what_is_expected(tmp_path: Path, reader: Callable[[Path], object], missing: str) -> None:
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetError, match=missing):
        reader(tmp_path)
