"""Rotated support views (`MatcherConfig.rotate`): the box maps exactly, and an object turned upside down in the query
matches its support better with the rotated views than without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Support
from focuskit.core.errors import ConfigError
from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer
from focuskit.matcher import MatcherConfig
from focuskit.matcher.region import _rotated_box

PHOTOS = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotated_box_holds_the_same_pixels(angle: int) -> None:
    rng = np.random.default_rng(angle)
    img = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    b = Box(7, 4, 21, 19)
    turned = img.rotate(angle, expand=True)
    rb = _rotated_box(b, angle, img.size)
    crop = np.asarray(img.crop(tuple(int(v) for v in b.as_list())).rotate(angle, expand=True))
    assert np.array_equal(np.asarray(turned.crop(tuple(int(v) for v in rb.as_list()))), crop)


def test_rotated_views_match_an_upside_down_object_better() -> None:
    teach = Support(PHOTOS / "cup_f0010.jpg", Box(308, 122, 413, 381))
    photo = Image.open(PHOTOS / "cup_f0010.jpg").convert("RGB")
    query = photo.rotate(180)
    plain = MatchingLocalizer(MatchingConfig(refine_top=0)).localize([teach], query)
    turned = MatchingLocalizer(MatchingConfig(refine_top=0, rotate=[180])).localize([teach], query)
    assert turned.box is not None and turned.score > plain.score


def test_rotate_angles_are_checked() -> None:
    with pytest.raises(ConfigError, match="rotate angles"):
        MatcherConfig(rotate=[45])
