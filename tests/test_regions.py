"""Region embeddings: pooled from the full map, re-embedded from a crop, or chosen per region by size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import ConfigError
from focuskit.core.masks import box_to_mask
from focuskit.matcher import MatcherConfig, RegionMatcher
from focuskit.models.encoders.base import FeatureMap
from focuskit.models.regions import (
    CROP_VARIANT,
    crop_window,
    embed_regions,
    refine_small_regions,
    region_cells,
    small_candidates,
)


class ColourEncoder:
    """A stand-in encoder: the features of a cell are the mean RGB of its pixels (+1), at stride 8, 64 px wide."""

    name, dim, stride = "colour", 3, 8

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def encode(self, image: Image.Image) -> FeatureMap:
        self.sizes.append(image.size)
        w, h = image.size
        scale = 64 / max(w, h)
        gw, gh = max(1, round(w * scale / 8)), max(1, round(h * scale / 8))
        arr = np.asarray(image.resize((gw, gh), Image.Resampling.BOX), dtype=np.float32) / 255 + 1
        return FeatureMap(torch.from_numpy(arr.transpose(2, 0, 1).copy()), image.size)


def scene() -> Image.Image:
    arr = np.zeros((200, 320, 3), dtype=np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[100:106, 200:206] = (255, 0, 0)  # a tiny red object
    arr[20:120, 20:140] = (0, 255, 0)  # a large green one
    return Image.fromarray(arr)


def test_region_cells_and_crop_window() -> None:
    fmap = ColourEncoder().encode(scene())  # 8 x 5 cells over 320 x 200
    assert region_cells(fmap, np.array([[0, 0, 40, 40], [0, 0, 320, 200]])).tolist() == [1.0, 40.0]
    assert crop_window(np.array([10, 10, 20, 20]), (320, 200), 0.5) == (5, 5, 25, 25)
    assert crop_window(np.array([0, 0, 320, 200]), (320, 200), 0.5) == (0, 0, 320, 200)


def test_crop_sees_a_small_object_that_pooling_blurs() -> None:
    img, enc = scene(), ColourEncoder()
    small = np.array([[200, 100, 206, 106]], dtype=float)
    red = np.array([2.0, 1.0, 1.0]) / np.linalg.norm([2.0, 1.0, 1.0])
    pooled = embed_regions(enc, img, small, mode="pool")[0]
    cropped = embed_regions(enc, img, small, mode="crop", context=0.1)[0]
    assert cropped @ red > pooled @ red + 0.05
    assert enc.sizes[-1] == (8, 8)  # the crop (box + 10% each side) is what the encoder saw, at its working size


def test_auto_picks_crop_only_for_small_regions() -> None:
    img, enc = scene(), ColourEncoder()
    boxes = np.array([[200, 100, 206, 106], [20, 20, 140, 120]], dtype=float)
    fmap = enc.encode(img)
    enc.sizes.clear()
    auto = embed_regions(enc, img, boxes, fmap=fmap, mode="auto", min_cells=4)
    assert len(enc.sizes) == 1  # the full map was reused; only the small region was re-encoded
    assert np.allclose(auto[1], embed_regions(enc, img, boxes[1:], fmap=fmap, mode="pool")[0])
    assert np.allclose(np.linalg.norm(auto, axis=1), 1.0, atol=1e-5)


def test_masks_restrict_pooling_in_both_modes() -> None:
    img, enc = scene(), ColourEncoder()
    box = np.array([[10, 10, 150, 130]], dtype=float)
    mask = box_to_mask([20, 20, 140, 120], img.size)[None]
    green = np.array([1.0, 2.0, 1.0]) / np.linalg.norm([1.0, 2.0, 1.0])
    for mode in ("pool", "crop"):
        boxed = embed_regions(enc, img, box, mode=mode)[0]
        masked = embed_regions(enc, img, box, masks=mask, mode=mode)[0]
        assert masked @ green > boxed @ green


def test_validation() -> None:
    img, enc = scene(), ColourEncoder()
    assert embed_regions(enc, img, np.zeros((0, 4))).shape == (0, 3)
    with pytest.raises(ConfigError, match="'pool', 'crop' or 'auto'"):
        embed_regions(enc, img, np.zeros((1, 4)), mode="zoom")
    with pytest.raises(ConfigError, match="one mask per box"):
        embed_regions(enc, img, np.array([[0, 0, 5, 5]]), masks=np.zeros((2, 200, 320), dtype=bool))


def test_only_the_best_small_candidates_are_re_embedded() -> None:
    img, enc = scene(), ColourEncoder()
    fmap = enc.encode(img)
    boxes = np.array([[200, 100, 206, 106], [20, 20, 140, 120], [0, 0, 6, 6], [300, 180, 306, 186]], dtype=float)
    scores = np.array([0.9, 0.8, 0.1, -np.inf])
    assert small_candidates(fmap, boxes, scores, min_cells=4, top=2).tolist() == [0]  # 2 is small but not top-2
    assert small_candidates(fmap, boxes, scores, min_cells=4, top=8).tolist() == [0, 2]  # never a -inf row
    assert small_candidates(fmap, boxes, scores, min_cells=0).tolist() == []  # off
    emb = fmap.pool_boxes(boxes)
    enc.sizes.clear()
    refined, rows = refine_small_regions(enc, img, fmap, boxes, emb, scores, min_cells=4, top=2)
    assert rows.tolist() == [0] and len(enc.sizes) == 1  # one encoder pass: the one small top candidate
    assert np.allclose(refined[1:], emb[1:]) and not np.allclose(refined[0], emb[0])
    assert np.allclose(refined[0], embed_regions(enc, img, boxes[:1], mode="crop")[0])
    same, none = refine_small_regions(enc, img, fmap, boxes, emb, scores, min_cells=0)
    assert same is emb and len(none) == 0


def test_matcher_adds_a_crop_variant_to_small_views_only_when_on() -> None:
    img, enc = scene(), ColourEncoder()
    views = [Box(200, 100, 206, 106), Box(20, 20, 140, 120)]
    off = RegionMatcher(MatcherConfig(zoom_out=[]), encoder=enc).many_view_variants(img, views)
    assert [[n for n, _ in v] for v in off] == [["original"], ["original"]]
    on = RegionMatcher(MatcherConfig(zoom_out=[], crop_small_cells=4), encoder=enc).many_view_variants(img, views)
    assert [[n for n, _ in v] for v in on] == [["original", CROP_VARIANT], ["original"]]
    red = np.array([2.0, 1.0, 1.0]) / np.linalg.norm([2.0, 1.0, 1.0])
    assert on[0][1][1] @ red > on[0][0][1] @ red + 0.05  # the crop sees the small red object, pooling blurs it
    with pytest.raises(ConfigError, match="crop_small_cells"):
        MatcherConfig(crop_small_cells=-1)


def test_matcher_refine_small_is_a_no_op_when_off() -> None:
    img, enc = scene(), ColourEncoder()
    fmap = enc.encode(img)
    boxes = np.array([[200, 100, 206, 106]], dtype=float)
    emb = fmap.pool_boxes(boxes)
    assert RegionMatcher(encoder=enc).refine_small(img, fmap, boxes, emb, np.array([0.9])) is emb
    on = RegionMatcher(MatcherConfig(crop_small_cells=4), encoder=enc)
    assert not np.allclose(on.refine_small(img, fmap, boxes, emb, np.array([0.9])), emb)


def test_memory_stores_a_crop_variant_for_small_views_and_old_memories_still_match(tmp_path) -> None:
    from focuskit.memory.store import AugmentConfig, ConceptMemory, EncoderSpec, MemoryConfig, ProposerSpec

    spec = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 64})
    arr = np.random.default_rng(0).integers(0, 255, size=(128, 192, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    small, large = Box(100, 60, 112, 72), Box(10, 10, 150, 110)  # 64 px input, stride 16: ~0.06 and ~7 cells

    def views(path, cells: float) -> int:
        config = MemoryConfig(augment=AugmentConfig(zoom_out=[], crop_small_cells=cells))
        with ConceptMemory(path, encoder=spec, config=config, proposer=ProposerSpec("windows")) as mem:
            mem.add("x", [img, img], boxes=[small, large])
            return len(mem.view_embeddings("x")[0])

    assert views(tmp_path / "off", 0) == 2  # one vector per view
    assert views(tmp_path / "on", 1) == 3  # + the small view's crop variant, indexed with the others
    config = MemoryConfig(augment=AugmentConfig(zoom_out=[], crop_small_cells=1))
    with ConceptMemory(tmp_path / "off", encoder=spec, config=config, create=False) as old:  # written without crops
        emb, _ = old.view_embeddings("x")
        assert old.match(emb, top_k=4).names == ["x"]


def test_mask_variants_keep_box_pooling_and_follow_it_under_their_own_names() -> None:
    img, enc = scene(), ColourEncoder()
    box = Box(0, 0, 240, 190)  # the green object and much blue around it
    mask = np.zeros((200, 320), dtype=bool)
    mask[20:120, 20:140] = True  # exactly the green object
    matcher = RegionMatcher(MatcherConfig(hflip=True, zoom_out=[2.0]), encoder=enc)
    stored = dict(matcher.many_view_variants(img, [box], [mask], mask_variants=True)[0])
    assert list(stored) == ["original", "hflip", "zoom2", "mask", "mask-hflip", "mask-zoom2"]
    plain = dict(matcher.many_view_variants(img, [box])[0])
    for name in ("original", "hflip", "zoom2"):  # the indexed variants do not change when a mask is stored too
        assert np.array_equal(stored[name], plain[name])
    green = np.array([1.0, 2.0, 1.0]) / np.linalg.norm([1.0, 2.0, 1.0])
    assert stored["mask"] @ green > stored["original"] @ green + 0.05  # pooled inside the object, not around it
    assert np.allclose(stored["mask"], enc.encode(img).pool_masks(mask[None])[0])
    # without mask_variants a mask replaces the box (how `localize` pools a masked support)
    replaced = dict(matcher.many_view_variants(img, [box], [mask])[0])
    assert list(replaced) == ["original", "hflip", "zoom2"] and np.allclose(replaced["original"], stored["mask"])


def test_memory_stores_the_vectors_the_shared_matcher_computes_for_the_same_view() -> None:
    from focuskit.memory.config import MemoryConfig
    from focuskit.memory.views import ViewPreparer

    img, enc = scene(), ColourEncoder()
    box = Box(20, 20, 140, 120)
    memory = ViewPreparer(MemoryConfig(), proposer=lambda: None).embed_view(enc, img, box, None)  # type: ignore[arg-type,return-value]
    localize = RegionMatcher(MatcherConfig(), encoder=enc).view_variants(img, box)
    assert [n for n, _ in memory] == [n for n, _ in localize]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(memory, localize, strict=True))
