"""Export to JSONL (per k, optional downscaling) and to a Hugging Face `datasets` folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import DatasetError
from focuskit.core.image import image_size
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.export import ImageShrinker, hf_output_dirs, output_paths, write_hf_dataset, write_jsonl


def frame(path: Path, size: tuple[int, int], *, orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(size[0]).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, exif=exif)
    return path


@pytest.fixture
def episodes(tmp_path: Path) -> list[Episode]:
    big = frame(tmp_path / "src" / "big.png", (200, 100))
    big2 = frame(tmp_path / "src" / "big2.jpg", (160, 120))
    small = frame(tmp_path / "src" / "small.jpg", (40, 30))
    pos = Episode(
        "tao/v/k2",
        (Support(big, Box(20, 10, 60, 50)), Support(small, Box(2, 2, 10, 10))),
        big2,
        Box(16, 12, 80, 60),
        {"sequence": "v", "distractors": {"supports": [[[100, 0, 120, 20]], []], "query": [[0, 0, 40, 40]]}},
    )
    neg = Episode("tao/v/k2/neg0", pos.supports, small, None, {"negative": True})
    return [pos, neg]


@pytest.mark.parametrize(
    ("shots", "expected"),
    [([4], {4: "eps.jsonl"}), ([1, 2, 4], {1: "eps.k1.jsonl", 2: "eps.k2.jsonl", 4: "eps.k4.jsonl"})],
)
def test_output_paths(tmp_path: Path, shots: list[int], expected: dict[int, str]) -> None:
    assert {k: p.name for k, p in output_paths(tmp_path / "eps.jsonl", shots).items()} == expected
    dirs = hf_output_dirs(tmp_path / "hf", shots)
    assert set(dirs) == set(shots) and (len(shots) == 1 or dirs[shots[-1]] == tmp_path / "hf" / f"k{shots[-1]}")


def test_jsonl_without_downscaling_round_trips(tmp_path: Path, episodes: list[Episode]) -> None:
    out = tmp_path / "out" / "eps.jsonl"
    assert write_jsonl(episodes, out, progress=False) == 2
    back = load_episodes(out)
    assert [e.id for e in back] == [e.id for e in episodes]
    assert back[0].supports[0].image.resolve() == episodes[0].supports[0].image.resolve()
    assert back[0].query_box == episodes[0].query_box and back[1].query_box is None


def test_max_side_downscales_images_and_scales_every_box(tmp_path: Path, episodes: list[Episode]) -> None:
    out = tmp_path / "out" / "eps.jsonl"
    write_jsonl(episodes, out, max_side=100, progress=False)
    pos, neg = load_episodes(out)
    big, small = pos.supports
    assert image_size(big.image) == (100, 50) and big.image.parent.name == "eps_images"
    assert big.box == Box(10, 5, 30, 25)
    assert small.image.resolve() == episodes[0].supports[1].image.resolve()  # already small: used in place
    assert small.box == Box(2, 2, 10, 10)
    assert image_size(pos.query_image) == (100, 75)
    assert pos.query_box == Box(10, 7.5, 50, 37.5)
    assert pos.meta["distractors"] == {"supports": [[[50.0, 0.0, 60.0, 10.0]], []], "query": [[0.0, 0.0, 25.0, 25.0]]}
    assert neg.query_box is None and neg.supports[0].image == big.image


def test_shared_shrinker_resizes_each_image_once(tmp_path: Path, episodes: list[Episode]) -> None:
    shrinker = ImageShrinker(100, tmp_path / "imgs")
    write_jsonl(episodes, tmp_path / "a.jsonl", shrinker=shrinker, progress=False)
    write_jsonl(episodes[:1], tmp_path / "b.jsonl", shrinker=shrinker, progress=False)
    assert sorted(p.suffix for p in (tmp_path / "imgs").iterdir()) == [".jpg", ".png"]
    assert load_episodes(tmp_path / "b.jsonl")[0].supports[0].image.resolve() == (
        load_episodes(tmp_path / "a.jsonl")[0].supports[0].image.resolve()
    )


def test_limit_writes_the_first_episodes(tmp_path: Path, episodes: list[Episode]) -> None:
    assert write_jsonl(episodes, tmp_path / "e.jsonl", limit=1, progress=False) == 1


def test_hf_dataset_has_image_features_and_scaled_boxes(tmp_path: Path, episodes: list[Episode]) -> None:
    from datasets import Image as HFImage
    from datasets import load_from_disk

    out = tmp_path / "hf"
    assert write_hf_dataset(episodes, out, max_side=100, progress=False) == 2
    ds = load_from_disk(str(out))
    assert isinstance(ds.features["query_image"], HFImage)
    row = ds[0]
    assert row["k"] == 2 and row["id"] == "tao/v/k2"
    assert [img.size for img in row["support_images"]] == [(100, 50), (40, 30)]
    assert row["support_boxes"][0] == pytest.approx([10, 5, 30, 25])
    assert row["query_image"].size == (100, 75) and row["query_box"] == pytest.approx([10, 7.5, 50, 37.5])
    assert ds[1]["query_box"] is None
    # saving again over our own folder replaces it; a foreign folder is never deleted
    assert write_hf_dataset(episodes[:1], out, progress=False) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        write_hf_dataset(episodes, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_hf_export_stores_exif_rotated_photos_upright(tmp_path: Path) -> None:
    from datasets import load_from_disk

    rotated = frame(tmp_path / "phone.jpg", (60, 40), orientation=6)  # stored 60x40, displayed 40x60
    ep = Episode("e", (Support(rotated, Box(5, 5, 30, 50)),), rotated, Box(1, 1, 20, 40))
    write_hf_dataset([ep], tmp_path / "hf", progress=False)
    row = load_from_disk(str(tmp_path / "hf"))[0]
    assert row["query_image"].size == (40, 60) == image_size(rotated)
