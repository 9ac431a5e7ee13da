"""The `matching` engine: finds real objects, rejects absent ones, caches supports, and explains bad input."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box, box_iou_batch, iou
from focuskit.core.config import load_config
from focuskit.core.episode import Support
from focuskit.core.errors import BoxError, ConfigError, DatasetError, ImageError
from focuskit.localizers import create_localizer
from focuskit.localizers.matching import DEFAULT_TAU, MatchingConfig, MatchingLocalizer, grid_boxes
from focuskit.matcher import DEFAULT_ENCODER_TAG
from focuskit.models.encoders import FeatureMap

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "focuskit" / "assets" / "realphotos"
BOX = {
    "box_f0000.jpg": Box(296, 17, 597, 238),
    "box_f0130.jpg": Box(143, 42, 517, 294),
    "box_f0310.jpg": Box(138, 125, 484, 358),
}
CUP = {"cup_f0010.jpg": Box(308, 122, 413, 381), "cup_f0195.jpg": Box(258, 103, 379, 401)}


@pytest.fixture(scope="module")
def engine() -> MatchingLocalizer:
    loc = create_localizer("matching")
    assert isinstance(loc, MatchingLocalizer)
    return loc


def _variant(engine: MatchingLocalizer, **changes: Any) -> MatchingLocalizer:
    """The module's engine with other options, sharing its loaded encoder and detector (tests stay fast)."""
    loc = MatchingLocalizer(replace(engine.config, **changes), encoder=engine.encoder)
    loc.matcher._proposers = engine.matcher.proposers
    return loc


def _supports(table: dict[str, Box], names: list[str], root: Path = PHOTOS) -> list[Support]:
    return [Support(root / n, table[n]) for n in names]


# --- behaviour on real photos ---------------------------------------------------------------------------------------
def test_finds_the_box_in_a_later_frame(engine: MatchingLocalizer) -> None:
    pred = engine.localize(_supports(BOX, ["box_f0000.jpg", "box_f0130.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.box is not None and iou(pred.box, BOX["box_f0310.jpg"]) >= 0.6
    assert pred.score >= engine.tau
    assert pred.meta["candidates"] > 0 and pred.meta["source"] in {"whole", "ssd", "windows", "similarity", "peaks"}
    assert pred.meta["support"] in (0, 1)


def test_says_absent_when_the_object_is_not_there(engine: MatchingLocalizer) -> None:
    pred = engine.localize(_supports(CUP, ["cup_f0010.jpg", "cup_f0195.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.box is None and pred.score < engine.tau


def test_tau_decides_between_box_and_absent(engine: MatchingLocalizer) -> None:
    supports = _supports(CUP, ["cup_f0010.jpg"])
    low = _variant(engine, tau=-1.0).localize(supports, PHOTOS / "box_f0310.jpg")
    high = _variant(engine, tau=1.0).localize(_supports(BOX, ["box_f0000.jpg"]), PHOTOS / "box_f0310.jpg")
    assert low.box is not None  # something is always the best candidate
    assert high.box is None  # and nothing reaches a perfect cosine


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_images(engine: MatchingLocalizer, tmp_path: Path, mode: str) -> None:
    def convert(name: str) -> Path:
        img = Image.open(PHOTOS / name)
        if mode == "I;16":
            out = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        else:
            out = img.convert(mode)
        path = tmp_path / f"{Path(name).stem}.png"
        out.save(path)
        return path

    supports = [Support(convert("box_f0000.jpg"), BOX["box_f0000.jpg"])]
    pred = engine.localize(supports, convert("box_f0310.jpg"))
    assert pred.box is not None and iou(pred.box, BOX["box_f0310.jpg"]) >= 0.5


# --- support cache --------------------------------------------------------------------------------------------------
class CountingEncoder:
    """Wraps an encoder and counts encode calls, to see what the cache saves."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.dim, self.stride = inner.name, inner.dim, inner.stride

    def encode(self, image: Image.Image) -> FeatureMap:
        self.calls += 1
        return self.inner.encode(image)


def test_support_embeddings_are_cached_by_image_and_box(engine: MatchingLocalizer, tmp_path: Path) -> None:
    counting = CountingEncoder(engine.encoder)
    # Candidates do not matter here: cheap sliding windows instead of the detector.
    # Without view variants (mirrored, zoomed out), each support image costs one encode.
    cfg = MatchingConfig(proposals=["windows"], fallback_proposals=[], hflip=False, zoom_out=[])
    loc = MatchingLocalizer(cfg, encoder=counting)  # type: ignore[arg-type]
    img = tmp_path / "s.jpg"
    shutil.copy(PHOTOS / "box_f0000.jpg", img)
    supports = [Support(img, BOX["box_f0000.jpg"]), Support(img, Box(300, 20, 590, 230))]
    loc.localize(supports, PHOTOS / "box_f0130.jpg")
    assert counting.calls == 2  # one image shared by both supports, plus the query
    loc.localize(supports, PHOTOS / "box_f0310.jpg")
    assert counting.calls == 3 and loc.cache_hits == 2  # only the new query is encoded
    loc.localize([Support(img, Box(290, 10, 600, 240))], PHOTOS / "box_f0310.jpg")
    assert counting.calls == 5  # a new box on the same image is a miss
    os.utime(img, ns=(0, 10**9))  # the file changed (as far as its mtime says)
    loc.localize(supports[:1], PHOTOS / "box_f0310.jpg")
    assert counting.calls == 7
    pil = Image.open(PHOTOS / "box_f0000.jpg")
    loc.localize([Support(pil, BOX["box_f0000.jpg"])], PHOTOS / "box_f0310.jpg")
    loc.localize([Support(pil.copy(), BOX["box_f0000.jpg"])], PHOTOS / "box_f0310.jpg")
    assert counting.calls == 10  # identical pixels hit the cache whatever the object identity


def test_each_support_is_embedded_from_its_own_image(engine: MatchingLocalizer) -> None:
    """Several support images in one call give the views each gives alone (a cache-key change once pooled every
    support's box on the first support's image, silently)."""
    supports = _supports(BOX, ["box_f0000.jpg", "box_f0130.jpg", "box_f0310.jpg"])
    together = _variant(engine).embed_supports(supports)
    for s, view in zip(supports, together, strict=True):
        (alone,) = _variant(engine).embed_supports([s])
        np.testing.assert_allclose(view.embeddings, alone.embeddings, atol=1e-6)


def test_cache_size_bounds_memory(engine: MatchingLocalizer) -> None:
    loc = MatchingLocalizer(MatchingConfig(cache_size=1), encoder=engine.encoder)
    views = loc.embed_supports(_supports(BOX, ["box_f0000.jpg", "box_f0130.jpg"]))
    assert len(views) == 2 and len(loc._cache) == 1


# --- candidates and scoring -------------------------------------------------------------------------------------------
def test_fallback_sources_when_the_detector_finds_nothing(engine: MatchingLocalizer) -> None:
    # The detector finds nothing, so only the whole image is proposed, and it scores below fallback_below.
    cfg = MatchingConfig(proposals=["ssd"], ssd_threshold=0.99, fallback_below=0.99)
    loc = MatchingLocalizer(cfg, encoder=engine.encoder)
    pred = loc.localize(_supports(BOX, ["box_f0000.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.meta["fallback"] is True and pred.meta["source"] in {"similarity", "peaks"}
    assert pred.box is not None and iou(pred.box, BOX["box_f0310.jpg"]) >= 0.4
    none = MatchingLocalizer(MatchingConfig(proposals=["similarity"], fallback_proposals=[]), encoder=engine.encoder)
    pred = none.localize(_supports(BOX, ["box_f0000.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.meta["source"] == "similarity" and pred.meta["fallback"] is False


def test_extra_instances_do_not_overlap(engine: MatchingLocalizer) -> None:
    loc = _variant(engine, max_instances=3, tau=0.2)
    pred = loc.localize(_supports(BOX, ["box_f0000.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.box is not None and len(pred.extra_boxes) <= 2
    boxes = [pred.box, *pred.extra_boxes]
    overlaps = box_iou_batch(boxes, boxes)[np.triu_indices(len(boxes), 1)]
    assert (overlaps <= 0.3 + 1e-9).all()


def test_grid_boxes_split_rows_then_columns() -> None:
    sub = grid_boxes(np.array([[0.0, 0.0, 30.0, 60.0]]), 3)
    assert sub.shape == (9, 4)
    np.testing.assert_allclose(sub[0], [0, 0, 10, 20])
    np.testing.assert_allclose(sub[1], [10, 0, 20, 20])
    np.testing.assert_allclose(sub[8], [20, 40, 30, 60])


def test_works_with_a_transformers_encoder() -> None:
    """A tiny random DINOv2 plugs into the engine (no accuracy expected): shapes and the protocol line up."""
    from transformers import Dinov2Config

    from focuskit.models.encoders import create_encoder

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=14)
    encoder = create_encoder("dinov2", model_config=cfg, input_size=112)
    loc = MatchingLocalizer(MatchingConfig(proposals=["windows"], tau=-1.0), encoder=encoder)
    pred = loc.localize(_supports(BOX, ["box_f0000.jpg"]), PHOTOS / "box_f0310.jpg")
    assert pred.box is not None and pred.meta["encoder"] == "dinov2:random"


# --- configuration and bad input ------------------------------------------------------------------------------------
def test_shipped_config_is_the_defaults() -> None:
    assert load_config(MatchingConfig, ROOT / "configs" / "matching.yaml") == MatchingConfig()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"proposals": ["ssd", "selective"]}, "proposals must be a non-empty list"),
        ({"proposals": []}, "proposals must be a non-empty list"),
        ({"fallback_proposals": ["grabcut"]}, "fallback_proposals must be a list"),
        ({"tau": 2.0}, "tau must be in"),
        ({"layout_weight": -0.1}, "layout_weight must be in"),
        ({"input_size": 8}, "input_size must be >= 32"),
        ({"cache_size": -1}, "cache_size must be >= 0"),
        ({"tau": "high"}, "expected a number"),
        ({"beam": 3}, "unknown key 'beam'"),
        ({"encoder": "resnet"}, "unknown encoder 'resnet'"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_localizer("matching", **options)


def test_default_tau_follows_the_encoder() -> None:
    """Cosine scales differ by network, so an unset tau takes the encoder's measured value; a given one wins."""
    assert create_localizer("matching", encoder="efficientnet_lite0").tau == DEFAULT_TAU["efficientnet_lite0"]
    assert create_localizer("matching", encoder="efficientnet_lite0", tau=0.3).tau == 0.3
    assert DEFAULT_TAU["mobilenetv2"] != DEFAULT_TAU["efficientnet_lite0"]
    assert create_localizer("matching").tau == DEFAULT_TAU[DEFAULT_ENCODER_TAG]


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("tau: 0.7\nlayout_weight: 0.3\n")
    loc = create_localizer("matching", config=path, tau=0.6)
    assert isinstance(loc, MatchingLocalizer)
    assert (loc.config.tau, loc.config.layout_weight) == (0.6, 0.3)
    path.write_text("tua: 0.7\n")
    with pytest.raises(ConfigError, match="unknown key 'tua'"):
        create_localizer("matching", config=path)
    with pytest.raises(ConfigError, match="config file not found"):
        create_localizer("matching", config=tmp_path / "missing.yaml")


def test_bad_supports_and_images(engine: MatchingLocalizer, tmp_path: Path) -> None:
    query = PHOTOS / "box_f0310.jpg"
    with pytest.raises(DatasetError, match="no supports given"):
        engine.localize([], query)
    with pytest.raises(BoxError, match="outside the 640x480 image"):
        engine.localize([Support(PHOTOS / "box_f0000.jpg", Box(500, 10, 700, 100))], query)
    with pytest.raises(BoxError, match="zero or negative area"):
        engine.localize([Support(PHOTOS / "box_f0000.jpg", Box(50, 10, 50, 100))], query)
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        engine.localize(_supports(BOX, ["box_f0000.jpg"]), corrupt)
    with pytest.raises(ImageError, match="not found"):
        engine.localize(_supports(BOX, ["box_f0000.jpg"]), tmp_path / "missing.jpg")
