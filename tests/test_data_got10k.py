"""GOT-10k reader and the paper's episodes built from a tiny fixture in the official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episode_builder import EpisodeConfig, build_sequence_episodes
from focuskit.data.got10k import Got10kDataset

W, H = 40, 30


def xywh(i: int) -> tuple[int, int, int, int]:
    """A box that moves one pixel right per frame, so each frame's box is recognisable."""
    return (2 + i, 3, 10, 8)


def write_sequence(
    split_dir: Path,
    name: str,
    n: int,
    *,
    absent: tuple[int, ...] = (),
    cover0: tuple[int, ...] = (),
    category: str | None = "zebra",
    gt_lines: list[str] | None = None,
) -> Path:
    seq = split_dir / name
    seq.mkdir(parents=True)
    for i in range(n):
        arr = np.full((H, W, 3), 40 + 5 * i, dtype=np.uint8)
        Image.fromarray(arr).save(seq / f"{i + 1:08d}.jpg")
    lines = gt_lines if gt_lines is not None else [",".join(map(str, xywh(i))) for i in range(n)]
    (seq / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    (seq / "absence.label").write_text("\n".join("1" if i in absent else "0" for i in range(n)) + "\n")
    (seq / "cover.label").write_text("\n".join("0" if i in cover0 else "8" for i in range(n)) + "\n")
    (seq / "cut_by_image.label").write_text("\n".join("0" for _ in range(n)) + "\n")
    if category is not None:
        (seq / "meta_info.ini").write_text(
            "[METAINFO]\nurl: https://youtu.be/x\nbegin: 00:00:01\nend: 00:00:05\nanno_fps: 10Hz\n"
            f"object_class: {category}\nmotion_class: running\nmajor_class: ungulate\nroot_class: animal\n"
            "motion_adverb: slowly\nresolution: (40, 30)\n"
        )
    with (split_dir / "list.txt").open("a") as fh:
        fh.write(name + "\n")
    return seq


@pytest.fixture
def got10k_root(tmp_path: Path) -> Path:
    root = tmp_path / "GOT-10k"
    val = root / "val"
    # frame 9 absent (so the query is frame 8), frame 5 fully covered (never a support)
    write_sequence(val, "GOT-10k_Val_000001", 10, absent=(9,), cover0=(5,))
    write_sequence(val, "GOT-10k_Val_000002", 6, category="canoe")
    return root


def test_reader_reads_boxes_visibility_and_category(got10k_root: Path) -> None:
    ds = Got10kDataset(got10k_root, "val")
    infos = ds.index()
    assert [i.name for i in infos] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
    assert [i.category for i in infos] == ["zebra", "canoe"]
    seq = ds.load("GOT-10k_Val_000001")
    assert seq is not None and len(seq) == 10
    assert seq.boxes[3] == Box.from_xywh(xywh(3))
    assert seq.visible[5] is False and seq.visible[9] is False and seq.visible[4] is True
    assert seq.usable_indices() == [0, 1, 2, 3, 4, 6, 7, 8]


def test_episodes_follow_the_paper_sampling(got10k_root: Path) -> None:
    result = build_sequence_episodes(Got10kDataset(got10k_root, "val"), EpisodeConfig(shots=[1, 2, 4]), progress=False)
    ep1, ep2, ep4 = (result.by_k[k][0] for k in (1, 2, 4))
    # query: the final usable frame (9 is absent); supports: first frame, last usable before the query, even gaps
    for ep in (ep1, ep2, ep4):
        assert ep.query_image.name == "00000009.jpg"
        assert ep.query_box == Box.from_xywh(xywh(8))
    assert ep1.meta["frames"] == [0, 8]
    assert ep2.meta["frames"] == [0, 7, 8]
    assert ep4.meta["frames"] == [0, 2, 4, 7, 8]  # 4.67 snaps to 4, never to the covered frame 5
    assert [s.box for s in ep4.supports] == [Box.from_xywh(xywh(i)) for i in (0, 2, 4, 7)]
    assert ep4.meta["category"] == "zebra"
    assert result.stats.episodes == {1: 2, 2: 2, 4: 2}


def test_root_in_another_layout_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match=r"val/list\.txt"):
        Got10kDataset(tmp_path, "val")


def test_unparsable_groundtruth_line_names_file_and_line(tmp_path: Path) -> None:
    lines = ["2,3,10,8", "3,3,10,8", "4,3,ten,8", "5,3,10,8"]
    write_sequence(tmp_path / "val", "GOT-10k_Val_000001", 4, gt_lines=lines)
    ds = Got10kDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match=r"groundtruth\.txt:3"):
        ds.load("GOT-10k_Val_000001")


def test_zero_area_and_outside_boxes_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = [",".join(map(str, xywh(i))) for i in range(8)]
    lines[2] = "5,5,0,7"  # zero width on a visible frame
    lines[7] = "100,100,5,5"  # entirely outside the 40x30 frame, on the would-be query frame
    lines[6] = "35,3,10,8"  # sticks out on the right: clipped to the frame
    write_sequence(tmp_path / "val", "GOT-10k_Val_000001", 8, gt_lines=lines)
    result = build_sequence_episodes(Got10kDataset(tmp_path, "val"), EpisodeConfig(shots=[2]), progress=False)
    ep = result.by_k[2][0]
    assert ep.meta["frames"] == [0, 5, 6]  # frame 7 dropped as query, frame 2 never considered
    assert ep.query_box == Box(35, 3, W, 11)
    counts = result.stats.report.counts
    assert counts["zero_area_box"] == 1 and counts["box_outside_frame"] == 1 and counts["box_clipped_to_frame"] == 1


def test_unreadable_image_is_skipped_and_another_frame_chosen(got10k_root: Path) -> None:
    (got10k_root / "val" / "GOT-10k_Val_000001" / "00000008.jpg").write_bytes(b"not a jpeg")
    result = build_sequence_episodes(Got10kDataset(got10k_root, "val"), EpisodeConfig(shots=[2]), progress=False)
    ep = next(e for e in result.by_k[2] if e.meta["sequence"] == "GOT-10k_Val_000001")
    assert ep.meta["frames"] == [0, 6, 8]  # frame 7 (index) was the last support; it is unreadable
    assert result.stats.report.counts["unreadable_image"] == 1


def test_sequences_with_too_few_usable_frames_are_skipped_per_k(tmp_path: Path) -> None:
    write_sequence(tmp_path / "val", "GOT-10k_Val_000001", 4, absent=(1,))  # 3 usable frames
    result = build_sequence_episodes(Got10kDataset(tmp_path, "val"), EpisodeConfig(shots=[1, 2, 4]), progress=False)
    assert len(result.by_k[1]) == 1 and len(result.by_k[2]) == 1 and result.by_k[4] == []
    assert result.stats.skipped[4]["too_few_usable_frames"] == 1


def test_test_split_with_first_frame_only_yields_no_episode(tmp_path: Path) -> None:
    write_sequence(tmp_path / "test", "GOT-10k_Test_000001", 5, gt_lines=["2,3,10,8"], category=None)
    ds = Got10kDataset(tmp_path, "test")
    result = build_sequence_episodes(ds, EpisodeConfig(shots=[1]), progress=False)
    assert result.total() == 0
    assert result.stats.report.counts["first_frame_only_annotation"] == 1
