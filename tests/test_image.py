from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.errors import ImageError
from focuskit.core.image import image_size, load_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    assert image_size(path) == (20, 40)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    img = Image.new("RGB", (8, 6), (10, 200, 30)).convert(mode)
    path = tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (8, 6)


def test_rgba_transparent_becomes_white(tmp_path: Path) -> None:
    arr = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    path = tmp_path / "t.png"
    Image.fromarray(arr, "RGBA").save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [255, 255, 255]


def test_16bit_grayscale_uses_full_range(tmp_path: Path) -> None:
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 255  # not all clipped to 255
    assert 50 < out[0, 1, 0] < 80


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(bad)
    truncated = tmp_path / "trunc.jpg"
    Image.new("RGB", (200, 200), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(truncated)


def test_refuses_absurd_size(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=50_000)


def test_array_and_bytes_inputs(tmp_path: Path) -> None:
    arr = np.zeros((5, 7, 3), dtype=np.uint8)
    assert load_image(arr).size == (7, 5)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2), dtype=np.uint8))
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    assert load_image(path.read_bytes()).size == (7, 5)
