"""PerMIRS reader: pickled per-frame mask dicts, PDM's ref-0 -> target-1 protocol, and a safe unpickler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episode_builder import EpisodeConfig, build_sequence_episodes
from focuskit.data.permirs import MASKS_FILE, PermirsDataset

W, H = 36, 28


def write_video(root: Path, name: str, rects: list[tuple[int, int, int, int]], *, distractor: bool = False) -> Path:
    video = root / name
    video.mkdir(parents=True)
    masks = np.empty(len(rects), dtype=object)
    for f, (x1, y1, x2, y2) in enumerate(rects):
        Image.fromarray(np.full((H, W, 3), 50 * f, dtype=np.uint8)).save(video / f"{f}.jpg")
        m = np.zeros((H, W), dtype=bool)
        m[y1:y2, x1:x2] = True
        entry = {np.int64(1000 + f % 1): m}  # track ids are numpy ints in the release
        if distractor:
            d = np.zeros((H, W), dtype=bool)
            d[0:4, 30:34] = True
            entry[np.int64(7)] = d
        masks[f] = entry
    np.save(video / MASKS_FILE.removesuffix(".npy"), masks, allow_pickle=True)
    return video


@pytest.fixture
def permirs_root(tmp_path: Path) -> Path:
    root = tmp_path / "PerMIRS"
    write_video(root, "4321", [(1, 2, 10, 12), (5, 6, 20, 22), (3, 3, 8, 9)], distractor=True)
    write_video(root, "8765", [(10, 10, 20, 20), (11, 11, 21, 21), (12, 12, 22, 22)])
    return root


def test_reader_turns_target_masks_into_boxes(permirs_root: Path) -> None:
    ds = PermirsDataset(permirs_root)
    assert [i.name for i in ds.index()] == ["4321", "8765"]
    seq = ds.load("4321")
    assert seq is not None
    assert seq.boxes == (Box(1, 2, 10, 12), Box(5, 6, 20, 22), Box(3, 3, 8, 9))
    assert seq.query_index == 1
    assert [t.track_id for t in seq.distractors] == ["7"]
    assert seq.distractor_boxes(1) == [Box(30, 0, 34, 4)]


def test_episodes_follow_pdm_protocol(permirs_root: Path) -> None:
    result = build_sequence_episodes(PermirsDataset(permirs_root), EpisodeConfig(shots=[1, 2, 4]), progress=False)
    ep1 = next(e for e in result.by_k[1] if e.meta["sequence"] == "4321")
    assert ep1.meta["frames"] == [0, 1] and ep1.query_box == Box(5, 6, 20, 22)
    ep2 = next(e for e in result.by_k[2] if e.meta["sequence"] == "4321")
    assert ep2.meta["frames"] == [0, 2, 1]
    assert ep2.meta["distractors"]["query"] == [[30.0, 0.0, 34.0, 4.0]]
    assert result.by_k[4] == [] and result.stats.skipped[4]["too_few_usable_frames"] == 2
    assert result.stats.objects_per_image == {2: 1, 1: 1}


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_mask_file_with_foreign_objects_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path, "1", [(1, 1, 5, 5)] * 3)
    arr = np.empty(3, dtype=object)
    arr[:] = [_Evil(), {}, {}]
    with (video / MASKS_FILE).open("wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    with pytest.raises(DatasetError, match=r"masks\.npz\.npy.*builtins\.print"):
        PermirsDataset(tmp_path).load("1")
    assert "pwned" not in capsys.readouterr().out


def test_not_a_permirs_root(tmp_path: Path) -> None:
    (tmp_path / "123").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "123" / "0.jpg")
    with pytest.raises(DatasetError, match=r"masks\.npz\.npy"):
        PermirsDataset(tmp_path)
