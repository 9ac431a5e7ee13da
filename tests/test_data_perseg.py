"""PerSeg reader (masks -> tight boxes) and its reference-00 episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episode_builder import EpisodeConfig, build_concept_episodes
from focuskit.data.perseg import box_from_mask, read_perseg
from focuskit.data.sequences import DataReport

W, H = 40, 32


def write_object(root: Path, name: str, rects: list[tuple[int, int, int, int] | None]) -> None:
    """One PerSeg object; rect i is the mask of image i (x1, y1, x2, y2 exclusive), None = empty mask."""
    (root / "Images" / name).mkdir(parents=True)
    (root / "Annotations" / name).mkdir(parents=True)
    for i, rect in enumerate(rects):
        Image.fromarray(np.full((H, W, 3), 20 * i, dtype=np.uint8)).save(root / "Images" / name / f"{i:02d}.jpg")
        mask = np.zeros((H, W, 3), dtype=np.uint8)
        if rect is not None:
            x1, y1, x2, y2 = rect
            mask[y1:y2, x1:x2] = (128, 0, 0)  # PerSeg masks are colored RGB PNGs
        Image.fromarray(mask).save(root / "Annotations" / name / f"{i:02d}.png")


@pytest.fixture
def perseg_root(tmp_path: Path) -> Path:
    root = tmp_path / "PerSeg"
    write_object(root, "backpack", [(2, 3, 12, 20), (5, 5, 30, 25), (0, 0, 40, 32), (10, 1, 11, 2)])
    write_object(root, "teddybear", [(1, 1, 9, 9), None, (4, 4, 20, 30)])
    return root


@pytest.mark.parametrize(
    ("rect", "expected"),
    [((2, 3, 12, 20), Box(2, 3, 12, 20)), ((0, 0, 40, 32), Box(0, 0, 40, 32)), ((10, 1, 11, 2), Box(10, 1, 11, 2))],
)
def test_box_from_mask_is_tight_with_exclusive_corner(rect: tuple[int, int, int, int], expected: Box) -> None:
    mask = np.zeros((H, W), dtype=bool)
    x1, y1, x2, y2 = rect
    mask[y1:y2, x1:x2] = True
    assert box_from_mask(mask) == expected


def test_empty_mask_has_no_box() -> None:
    assert box_from_mask(np.zeros((4, 4), dtype=bool)) is None


def test_reader_makes_reference_00_and_positives(perseg_root: Path) -> None:
    report = DataReport()
    ds = read_perseg(perseg_root, report=report)
    assert [c.name for c in ds.concepts] == ["backpack", "teddybear"]
    bag = ds.concept("backpack")
    assert [v.image.name for v in bag.references] == ["00.jpg"]
    assert bag.references[0].box == Box(2, 3, 12, 20)
    assert [v.box for v in bag.positives] == [Box(5, 5, 30, 25), Box(0, 0, 40, 32), Box(10, 1, 11, 2)]
    assert bag.positives[0].load_mask() is not None
    assert report.counts["empty_mask"] == 1  # teddybear/01
    assert [v.image.name for v in ds.concept("teddybear").positives] == ["02.jpg"]


def test_episodes_use_first_k_views_as_supports_and_each_other_view_as_query(perseg_root: Path) -> None:
    result = build_concept_episodes(read_perseg(perseg_root), EpisodeConfig(shots=[1, 2]), progress=False)
    one_shot = {(e.meta["sequence"], e.query_image.name) for e in result.by_k[1]}
    assert one_shot == {("backpack", "01.jpg"), ("backpack", "02.jpg"), ("backpack", "03.jpg"), ("teddybear", "02.jpg")}
    for ep in result.by_k[1]:
        assert ep.supports[0].image.name == "00.jpg"
    two = [e for e in result.by_k[2] if e.meta["sequence"] == "backpack"]
    assert [e.query_image.name for e in two] == ["02.jpg", "03.jpg"]
    assert two[0].query_box == Box(0, 0, 40, 32)
    assert result.stats.skipped[2]["too_few_usable_frames"] == 1  # teddybear has 2 usable views


def test_negatives_take_their_query_from_another_object(perseg_root: Path) -> None:
    result = build_concept_episodes(read_perseg(perseg_root), EpisodeConfig(shots=[1], negatives=3), progress=False)
    negs = [e for e in result.by_k[1] if e.meta.get("negative")]
    assert len(negs) == 3
    for ep in negs:
        assert ep.query_box is None
        assert ep.meta["query_from"] != ep.meta["sequence"]
        assert ep.query_image.parent.name == ep.meta["query_from"]


def test_missing_annotations_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "Images" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Annotations"):
        read_perseg(tmp_path)
