"""One image / video table (`focuskit.core.media`): the CLI, the photo library, the server and the dataset loaders
sort every file the same way, and a GIF is one image (its first frame) on every surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.cli.inputs import expand_inputs, single_video
from focuskit.core.errors import ConfigError, DatasetError
from focuskit.core.image import load_image
from focuskit.core.media import IMAGE_MEDIA_TYPES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image, is_video, media_kind
from focuskit.data.qa.types import QAItem, check_media_suffix
from focuskit.data.sequences import list_images
from focuskit.library.media import scan_media

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
TABLE = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)
NOT_MEDIA = (".txt", ".xmp", ".json", ".mp3", ".heic-thumb", "")


def test_table_is_one_answer_per_suffix() -> None:
    assert not set(IMAGE_SUFFIXES) & set(VIDEO_SUFFIXES)
    assert all(s.startswith(".") and s == s.lower() for s in TABLE)
    assert set(IMAGE_MEDIA_TYPES) == set(IMAGE_SUFFIXES)
    assert all(t.startswith("image/") for t in IMAGE_MEDIA_TYPES.values())
    assert {".gif", ".jpg", ".png", ".tiff"} <= set(IMAGE_SUFFIXES)
    assert {".mp4", ".mov", ".mpg", ".mpeg"} <= set(VIDEO_SUFFIXES)


@pytest.mark.parametrize("suffix", [*TABLE, *(s.upper() for s in TABLE), *NOT_MEDIA])
def test_cli_and_library_agree_on_every_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    path.write_bytes(b"")  # sorting is by name: nothing is decoded before a model is loaded
    expected = media_kind(path)
    library = [f.kind for f in scan_media(tmp_path)]
    assert library == ([] if expected is None else [expected])

    if expected is None:
        with pytest.raises(ConfigError, match="no images or videos"):
            expand_inputs([tmp_path])
        with pytest.raises(DatasetError, match="neither an image nor a video"):
            check_media_suffix(path, "qa.json line 1")
        return
    assert expand_inputs([tmp_path]) == [path]
    assert (single_video([path]) == path) is (expected == "video")
    assert is_video(path) is (expected == "video") and is_image(path) is (expected == "image")
    if expected == "image":
        assert expand_inputs([tmp_path], videos=False) == [path]
        assert list_images(tmp_path) == [path]
    else:
        with pytest.raises(ConfigError, match="is a video"):
            expand_inputs([path], videos=False)
        assert list_images(tmp_path) == []
    item = QAItem(id="q", kind="open", media=path, concepts=("x",), question="?")
    assert item.video is (expected == "video")
    check_media_suffix(path, "qa.json line 1")


def test_a_mixed_folder_is_split_the_same_way_by_cli_and_library(tmp_path: Path) -> None:
    for i, suffix in enumerate((*TABLE, *NOT_MEDIA)):
        (tmp_path / f"f{i:02d}{suffix}").write_bytes(b"")
    library = {f.path: f.kind for f in scan_media(tmp_path)}
    cli_all = expand_inputs([tmp_path])
    cli_images = expand_inputs([tmp_path], videos=False)
    assert {p.name for p in cli_all} == set(library)
    assert {p.name for p in cli_images} == {p for p, k in library.items() if k == "image"}
    assert len(library) == len(TABLE)


def _animated_gif(path: Path) -> tuple[Image.Image, Image.Image]:
    """A two-frame GIF: the box photo, then the cup photo (what a short phone loop looks like)."""
    first = Image.open(REAL / "box_f0100.jpg").convert("RGB")
    second = Image.open(REAL / "cup_f0010.jpg").convert("RGB").resize(first.size)
    first.save(path, save_all=True, append_images=[second], duration=200, loop=0)
    return first, second


def test_an_animated_gif_is_one_image_on_every_surface(tmp_path: Path) -> None:
    gif = tmp_path / "loop.gif"
    first, second = _animated_gif(gif)
    assert Image.open(gif).n_frames == 2

    # CLI: an image input (accepted where videos are refused), never the video path of `detect` / `personalize`.
    assert expand_inputs([gif], videos=False) == [gif]
    assert single_video([gif]) is None
    # Library and server: an image file, served as image/gif.
    assert [(f.path, f.kind) for f in scan_media(tmp_path)] == [("loop.gif", "image")]
    assert IMAGE_MEDIA_TYPES[".gif"] == "image/gif"
    # Datasets: a concept photo, and an image QA item.
    assert list_images(tmp_path) == [gif]
    assert not QAItem(id="q", kind="open", media=gif, concepts=("x",), question="?").video

    # Read as its first frame (the GIF palette makes it close to, not equal to, the source photo).
    img = load_image(gif)
    assert img.mode == "RGB" and img.size == first.size
    got = np.asarray(img, dtype=np.float32)
    to_first = np.abs(got - np.asarray(first, dtype=np.float32)).mean()
    to_second = np.abs(got - np.asarray(second, dtype=np.float32)).mean()
    assert to_first < 20 and to_first < to_second / 2


def test_library_indexes_a_gif_as_one_photo_of_its_first_frame(tmp_path: Path) -> None:
    from focuskit.core.box import Box
    from focuskit.library import LibraryConfig, LibraryIndex
    from focuskit.memory.store import ConceptMemory
    from focuskit.models.encoders import create_encoder

    photos = tmp_path / "photos"
    photos.mkdir()
    _animated_gif(photos / "loop.gif")
    encoder = create_encoder("mobilenetv2")
    memory = ConceptMemory(tmp_path / "mem", encoder=encoder)
    memory.add("box", [REAL / "box_f0000.jpg"], boxes=[Box(296.0, 14.0, 597.0, 242.0)])

    index = LibraryIndex(tmp_path / "state", LibraryConfig(proposers=["windows"], batch_size=2), encoder=encoder)
    report = index.update(photos, progress=False)
    assert (report.added, report.failed, report.items) == (1, [], 1)
    hits = index.search("box", memory)
    assert [(h.path, h.frame) for h in hits] == [("loop.gif", None)]
