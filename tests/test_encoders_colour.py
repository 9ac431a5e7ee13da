"""ColourEncoder: a region's colour histogram joins its embedding, so same-shape regions of different colours part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.models.encoders.base import FeatureMap
from focuskit.models.encoders.colour import BINS, ColourEncoder, colour_histograms


class FlatEncoder:
    """Colour-blind features: every cell the same vector (what pooled ImageNet features approximate for colour)."""

    name, dim, stride = "flat", 8, 16

    def encode(self, image: Image.Image) -> FeatureMap:
        w, h = image.size
        return FeatureMap(torch.ones(self.dim, h // 16, w // 16), image.size)


def _scene() -> Image.Image:
    arr = np.zeros((64, 128, 3), np.uint8)
    arr[:, :64] = (220, 30, 30)  # red left half
    arr[:, 64:] = (30, 30, 220)  # blue right half
    return Image.fromarray(arr)


def test_histograms_sum_to_one_per_cell_and_ignore_brightness_of_colours() -> None:
    hist = colour_histograms(_scene(), (8, 4))
    assert hist.shape == (BINS, 4, 8)
    assert np.allclose(hist.sum(0), 1.0)
    darker = Image.fromarray((np.asarray(_scene()) * 0.7).astype(np.uint8))
    assert np.allclose(colour_histograms(darker, (8, 4)), hist)  # hue and saturation bins, not RGB


def test_same_shape_regions_of_different_colours_are_told_apart() -> None:
    fm = ColourEncoder(FlatEncoder(), colour_weight=0.3).encode(_scene())
    left, right, left2 = fm.pool_boxes(np.array([[0, 0, 32, 64], [64, 0, 96, 64], [32, 0, 64, 64]], float))
    assert fm.dim == 8 + BINS and np.isclose(np.linalg.norm(left), 1.0)
    # cos = (1 - w) * cos(inner) + w * Bhattacharyya: 0.7 * 1 + 0.3 * 0 across colours, 1 within one
    assert np.isclose(left @ right, 0.7, atol=1e-5)
    assert np.isclose(left @ left2, 1.0, atol=1e-5)
    plain = FlatEncoder().encode(_scene()).pool_boxes(np.array([[0, 0, 32, 64], [64, 0, 96, 64]], float))
    assert np.isclose(plain[0] @ plain[1], 1.0)  # what the colour term fixes


def test_tag_and_bad_weight() -> None:
    assert ColourEncoder(FlatEncoder(), colour_weight=0.2).name == "flat+colour0.2"
    with pytest.raises(ConfigError, match="colour_weight"):
        ColourEncoder(FlatEncoder(), colour_weight=1.5)
