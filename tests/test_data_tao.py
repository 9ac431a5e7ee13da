"""TAO reader: most frequent track as target, the others as distractors in the episode metadata."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episode_builder import EpisodeConfig, FrameChecker, build_sequence_episodes, select_frames
from focuskit.data.sequences import DataReport
from focuskit.data.tao import TaoDataset

W, H = 48, 36


def make_tao(
    root: Path, *, split_file: str = "validation.json", extra_anns: list[dict[str, Any]] | None = None
) -> Path:
    """Two videos. Video 1: track 11 (person) in frames 0-2, track 12 (dog) in all 5 frames -> target 12.
    Video 2: one track (cup) in 3 frames."""
    images, annotations = [], []
    videos = [
        {"id": 1, "name": "val/YFCC100M/v_aaa", "width": W, "height": H},
        {"id": 2, "name": "val/LaSOT/cup-1", "width": W, "height": H},
    ]
    tracks = [
        {"id": 11, "category_id": 1, "video_id": 1},
        {"id": 12, "category_id": 2, "video_id": 1},
        {"id": 21, "category_id": 3, "video_id": 2},
    ]
    img_id = ann_id = 0
    for vid, n in ((1, 5), (2, 3)):
        video = videos[vid - 1]["name"]
        for f in range(n):
            img_id += 1
            file_name = f"{video}/frame{f:04d}.jpg"
            path = root / "frames" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 30 * f, dtype=np.uint8)).save(path)
            images.append(
                {"id": img_id, "video_id": vid, "file_name": file_name, "width": W, "height": H, "frame_index": f * 30}
            )
            boxes = {12: [2 + f, 4, 10, 9]} if vid == 1 else {21: [20, 10 + f, 6, 6]}
            if vid == 1 and f < 3:
                boxes[11] = [30, 20, 8, 10]
            for tid, bbox in boxes.items():
                ann_id += 1
                cat = next(t["category_id"] for t in tracks if t["id"] == tid)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": img_id,
                        "video_id": vid,
                        "track_id": tid,
                        "bbox": bbox,
                        "area": bbox[2] * bbox[3],
                        "category_id": cat,
                    }
                )
    annotations.extend(extra_anns or [])
    data = {
        "info": {},
        "licenses": [],
        "videos": videos,
        "images": images,
        "tracks": tracks,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cup"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split_file).write_text(json.dumps(data))
    return root


def test_target_is_the_most_frequent_track(tmp_path: Path) -> None:
    ds = TaoDataset(make_tao(tmp_path), "val")
    infos = {i.name: i.category for i in ds.index()}
    assert infos == {"val/YFCC100M/v_aaa": "dog", "val/LaSOT/cup-1": "cup"}
    seq = ds.load("val/YFCC100M/v_aaa")
    assert seq is not None and seq.meta["target_track"] == "12"
    assert seq.frames[0] == tmp_path / "frames" / "val/YFCC100M/v_aaa/frame0000.jpg"
    assert [t.track_id for t in seq.distractors] == ["11"]
    assert seq.distractors[0].boxes[3] is None and seq.distractors[0].boxes[1] == Box.from_xywh((30, 20, 8, 10))


def test_episode_metadata_keeps_distractors(tmp_path: Path) -> None:
    result = build_sequence_episodes(TaoDataset(make_tao(tmp_path), "val"), EpisodeConfig(shots=[2]), progress=False)
    ep = next(e for e in result.by_k[2] if e.meta["sequence"] == "val/YFCC100M/v_aaa")
    assert ep.meta["frames"] == [0, 3, 4]
    assert ep.query_box == Box.from_xywh((6, 4, 10, 9))
    assert ep.meta["distractors"] == {"supports": [[[30.0, 20.0, 38.0, 30.0]], []], "query": []}
    assert result.stats.objects_per_image == {1: 2}  # neither query frame shows a second annotated object
    gap = build_sequence_episodes(TaoDataset(tmp_path, "val"), EpisodeConfig(shots=[2], query_gap=2), progress=False)
    assert next(e for e in gap.by_k[2] if e.meta["sequence"] == "val/YFCC100M/v_aaa").meta["frames"] == [0, 1, 4]


def test_fixed_query_frame_takes_supports_around_it(tmp_path: Path) -> None:
    ds = TaoDataset(make_tao(tmp_path), "val")
    seq = ds.load("val/YFCC100M/v_aaa")
    assert seq is not None
    s1 = replace(seq, query_index=1)  # both tracks are annotated in frame 1
    picks = select_frames(s1, 2, FrameChecker(s1, EpisodeConfig(), DataReport()))
    assert picks == ([0, 4], 1)
    assert len(s1.distractor_boxes(1)) == 1


def test_zero_area_and_dangling_annotations_are_counted(tmp_path: Path) -> None:
    extra = [
        {"id": 900, "image_id": 2, "video_id": 1, "track_id": 11, "bbox": [5, 5, 0, 4], "category_id": 1},
        {"id": 901, "image_id": 999, "video_id": 1, "track_id": 11, "bbox": [5, 5, 3, 4], "category_id": 1},
    ]
    ds = TaoDataset(make_tao(tmp_path, extra_anns=extra), "val")
    seq = ds.load("val/YFCC100M/v_aaa")
    assert seq is not None and seq.distractors[0].boxes[1] is None  # replaced by the zero-area box, skipped
    assert ds.report.counts["zero_area_box"] == 1
    assert ds.report.counts["dangling_annotation"] == 1


def test_missing_annotation_file_names_it(tmp_path: Path) -> None:
    make_tao(tmp_path, split_file="train.json")
    with pytest.raises(DatasetError, match=r"annotations/validation\.json"):
        TaoDataset(tmp_path, "val")


def test_json_without_tao_tables_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "validation.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match=r"'videos'.*'tracks'"):
        TaoDataset(tmp_path, "val")
