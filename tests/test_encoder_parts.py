"""Part-aware region embeddings: one vector whose dot product is the whole-box cosine mixed with the layout term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.models.encoders import FeatureMap, create_encoder
from focuskit.models.encoders.parts import PartsEncoder, PartsFeatureMap, grid_boxes


class RandomEncoder:
    name = "random"
    dim = 8
    stride = 16

    def encode(self, image: Image.Image) -> FeatureMap:
        g = torch.Generator().manual_seed(image.width)
        return FeatureMap(torch.rand((8, 6, 9), generator=g), image.size)


BOXES = np.array([[0.0, 0.0, 90.0, 60.0], [10.0, 5.0, 70.0, 50.0], [30.0, 20.0, 88.0, 58.0]])


@pytest.mark.parametrize("part_channels", [None, 3])
def test_dot_product_is_whole_cosine_mixed_with_layout(part_channels: int | None) -> None:
    enc = PartsEncoder(RandomEncoder(), grid=3, part_weight=0.4, part_channels=part_channels)
    fm = enc.encode(Image.new("RGB", (144, 96)))
    emb = fm.pool_boxes(BOXES)
    assert emb.shape == (3, enc.dim) and fm.dim == enc.dim
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    plain = FeatureMap(fm.features, fm.image_size)
    whole = plain.pool_boxes(BOXES)
    cells_fm = plain if part_channels is None else FeatureMap(fm.features[:part_channels], fm.image_size)
    cells = cells_fm.pool_boxes(grid_boxes(BOXES, 3)).reshape(3, 9, -1)
    expected = 0.6 * whole @ whole.T + 0.4 * np.einsum("ngc,mgc->nm", cells, cells) / 9
    np.testing.assert_allclose(emb @ emb.T, expected, atol=1e-5)


def test_masks_similarity_and_tags() -> None:
    enc = PartsEncoder(RandomEncoder(), grid=2, part_weight=0.3)
    assert enc.name == "random+parts2w0.3" and enc.dim == 8 * 5
    fm = enc.encode(Image.new("RGB", (144, 96)))
    mask = np.zeros((96, 144), bool)
    mask[10:50, 20:80] = True
    assert fm.pool_masks(mask).shape == (1, enc.dim)
    assert fm.similarity(fm.pool_boxes(BOXES[:1])[0]).shape == (6, 9)
    assert isinstance(fm, PartsFeatureMap) and fm.pool_boxes(np.zeros((0, 4))).shape == (0, enc.dim)


def test_factory_options() -> None:
    enc = create_encoder("mobilenetv2", layer="s16", pretrained=False, parts=3)
    assert isinstance(enc, PartsEncoder) and enc.dim == 96 * 10 and enc.name.endswith("+parts3w0.3")
    with pytest.raises(ConfigError, match="part_weight"):
        create_encoder("mobilenetv2", layer="s16", pretrained=False, parts=3, part_weight=2.0)
    with pytest.raises(ConfigError, match="part_channels"):
        PartsEncoder(RandomEncoder(), part_channels=9)
