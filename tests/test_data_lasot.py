"""LaSOT reader, its visibility files, official split lists, and the unseen-category protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episode_builder import EpisodeConfig, build_sequence_episodes, partition_infos
from focuskit.data.lasot import LasotDataset

CLASSES = ("airplane", "bird", "cat", "dog", "frog", "horse")


def write_lasot_sequence(
    root: Path, name: str, n: int = 6, *, occluded: tuple[int, ...] = (), oov: tuple[int, ...] = ()
) -> None:
    cls = name.rsplit("-", 1)[0]
    seq = root / cls / name
    (seq / "img").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((24, 32, 3), 10 * i, dtype=np.uint8)).save(seq / "img" / f"{i + 1:08d}.jpg")
    # LaSOT writes 0,0,0,0 for frames where the target is fully occluded
    rows = ["0,0,0,0" if i in occluded else f"{1 + i},2,6,5" for i in range(n)]
    (seq / "groundtruth.txt").write_text("\n".join(rows) + "\n")
    (seq / "full_occlusion.txt").write_text(",".join("1" if i in occluded else "0" for i in range(n)) + "\n")
    (seq / "out_of_view.txt").write_text(",".join("1" if i in oov else "0" for i in range(n)) + "\n")
    (seq / "nlp.txt").write_text(f"the {cls} in front\n")


@pytest.fixture
def lasot_root(tmp_path: Path) -> Path:
    root = tmp_path / "LaSOT"
    for cls in CLASSES:
        for n in (1, 2):
            write_lasot_sequence(root, f"{cls}-{n}")
    write_lasot_sequence(root, "airplane-3", occluded=(5,), oov=(2,))
    return root


def test_visibility_combines_full_occlusion_and_out_of_view(lasot_root: Path) -> None:
    seq = LasotDataset(lasot_root).load("airplane-3")
    assert seq is not None and seq.category == "airplane"
    assert seq.visible == (True, True, False, True, True, False)
    assert seq.boxes[5] is None and seq.boxes[1] == Box.from_xywh((2, 2, 6, 5))
    assert seq.meta["description"] == "the airplane in front"


def test_episodes_skip_occluded_and_out_of_view_frames(lasot_root: Path) -> None:
    ds = LasotDataset(lasot_root)
    result = build_sequence_episodes(ds, EpisodeConfig(shots=[2], limit=None), progress=False)
    ep = next(e for e in result.by_k[2] if e.meta["sequence"] == "airplane-3")
    assert ep.meta["frames"] == [0, 3, 4]  # query 4 (5 occluded), supports skip the out-of-view frame 2
    assert ep.query_box == Box.from_xywh((5, 2, 6, 5))
    assert result.stats.report.counts.get("zero_area_box", 0) == 0  # 0,0,0,0 on an occluded frame is expected


def test_not_a_lasot_root(tmp_path: Path) -> None:
    (tmp_path / "airplane").mkdir()
    with pytest.raises(DatasetError, match=r"groundtruth\.txt"):
        LasotDataset(tmp_path)


def test_bad_flag_line_names_the_file(lasot_root: Path) -> None:
    (lasot_root / "bird" / "bird-1" / "out_of_view.txt").write_text("0,0,x,0,0,0\n")
    with pytest.raises(DatasetError, match=r"out_of_view\.txt:1"):
        LasotDataset(lasot_root).load("bird-1")


def test_official_split_list(lasot_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"testing_set\.txt"):
        LasotDataset(lasot_root, "test").index()
    (lasot_root / "testing_set.txt").write_text("cat-1\ndog-2\nzebra-9\n")
    ds = LasotDataset(lasot_root, "test")
    assert [i.name for i in ds.index()] == ["cat-1", "dog-2"]
    assert ds.report.counts["missing_sequence_dir"] == 1


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_unseen_category_protocol_splits_classes_in_half(lasot_root: Path, seed: int) -> None:
    infos = LasotDataset(lasot_root).index()
    parts = {
        part: partition_infos(infos, EpisodeConfig(partition="category", part=part, seed=seed))
        for part in ("train", "test")
    }
    train_cls = {i.category for i in parts["train"]}
    test_cls = {i.category for i in parts["test"]}
    assert train_cls.isdisjoint(test_cls)
    assert train_cls | test_cls == set(CLASSES)
    assert len(train_cls) == len(test_cls) == len(CLASSES) // 2
    assert len(parts["train"]) + len(parts["test"]) == len(infos)  # every sequence lands in exactly one part
    again = partition_infos(infos, EpisodeConfig(partition="category", part="test", seed=seed))
    assert again == parts["test"]
