"""Segmenters: GrabCut on synthetic and real photos, the box baseline, the factory, and SAM / GroundingDINO on tiny
random configs (never the hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.detections import Detections
from focuskit.core.errors import BoxError, ConfigError, ModelError
from focuskit.core.masks import box_to_mask, mask_iou_batch
from focuskit.models.segmenters import (
    Segmenter,
    create_grounding_dino,
    create_segmenter,
    list_segmenters,
    masks_for_boxes,
)
from focuskit.models.segmenters.grounding_dino import prompt_text


def disk_scene(seed: int = 0) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
    """A red disk on a green-grey noisy background: (image, true mask, a box around the disk)."""
    rng = np.random.default_rng(seed)
    h, w = 90, 120
    arr = np.clip(rng.normal((90, 130, 90), 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    truth = (xx - 60) ** 2 + (yy - 45) ** 2 <= 22**2
    arr[truth] = np.clip(rng.normal((210, 40, 40), 15, size=(int(truth.sum()), 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr), truth, (34, 19, 87, 72)


class FixedProposer:
    def __init__(self, boxes: list[list[float]]) -> None:
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def propose(self, image: Image.Image) -> np.ndarray:
        return self.boxes


def test_factory() -> None:
    assert list_segmenters() == ["grabcut", "box", "sam", "grounded_sam"]
    assert isinstance(create_segmenter(), Segmenter) and create_segmenter().name == "grabcut"
    with pytest.raises(ConfigError, match="unknown segmenter 'sammy'; available: grabcut"):
        create_segmenter("sammy")
    with pytest.raises(ConfigError, match=r"segmenter 'grabcut'.*colour"):
        create_segmenter("grabcut", colour=1)
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        create_segmenter("grabcut", iterations=0)


def test_grabcut_finds_the_disk_inside_its_box() -> None:
    img, truth, box = disk_scene()
    seg = create_segmenter("grabcut")
    mask = seg.mask_for_box(img, box)
    assert mask.shape == (90, 120) and mask.dtype == bool
    assert mask_iou_batch(mask, truth)[0, 0] > 0.9
    assert mask_iou_batch(box_to_mask(box, img.size), truth)[0, 0] < 0.6  # the box alone is much worse
    assert not (mask & ~box_to_mask(box, img.size)).any()  # never outside the box
    assert np.array_equal(mask, seg.mask_for_box(img, Box(*box)))  # deterministic, Box or numbers


@pytest.mark.parametrize(
    ("box", "expect"),
    [
        ((0, 0, 120, 90), "some"),  # the whole image: still segments
        ((10, 10, 12, 12), "box"),  # too small for GrabCut: the box itself
        ((-20, -20, 40, 40), "some"),  # partly outside: clipped
    ],
)
def test_grabcut_edge_boxes(box, expect) -> None:
    img, _, _ = disk_scene()
    mask = create_segmenter("grabcut").mask_for_box(img, box)
    clipped = box_to_mask(box, img.size)
    assert mask.any() and not (mask & ~clipped).any()
    if expect == "box":
        assert np.array_equal(mask, clipped)


def test_grabcut_flat_image_falls_back_to_the_box() -> None:
    img = Image.new("RGB", (50, 40), (128, 128, 128))
    mask = create_segmenter("grabcut").mask_for_box(img, (10, 10, 30, 30))
    assert np.array_equal(mask, box_to_mask((10, 10, 30, 30), img.size))


def test_grabcut_rejects_boxes_outside() -> None:
    img, _, _ = disk_scene()
    with pytest.raises(BoxError, match="less than one pixel inside the 120x90 image"):
        create_segmenter("grabcut").mask_for_box(img, (200, 10, 230, 40))


def test_grabcut_on_real_coins() -> None:
    """scikit-image's coins photo: a box around one coin gives the coin (ground truth from its bright pixels)."""
    import skimage.data
    from scipy import ndimage

    gray = skimage.data.coins()
    img = Image.fromarray(gray).convert("RGB")
    box = (305, 16, 365, 72)
    x1, y1, x2, y2 = box
    truth = np.zeros(gray.shape, dtype=bool)
    truth[y1:y2, x1:x2] = ndimage.binary_fill_holes(gray[y1:y2, x1:x2] > 120)
    mask = create_segmenter("grabcut").mask_for_box(img, box)
    assert mask_iou_batch(mask, truth)[0, 0] > 0.9


def test_masks_need_a_proposer_and_use_it() -> None:
    img, truth, box = disk_scene()
    with pytest.raises(ConfigError, match="proposer="):
        create_segmenter("grabcut").masks(img)
    seg = create_segmenter("grabcut", proposer=FixedProposer([list(box), [35, 20, 86, 71], [0, 0, 20, 20]]))
    masks = seg.masks(img)
    assert masks.shape[1:] == (90, 120) and len(masks) == 2  # the near-duplicate second box is suppressed
    assert mask_iou_batch(masks[0], truth)[0, 0] > 0.9
    box_masks = create_segmenter("box", proposer=FixedProposer([list(box)])).masks(img)
    assert np.array_equal(box_masks[0], box_to_mask(box, img.size))
    assert create_segmenter("box").masks(img).shape == (0, 90, 120)
    assert masks_for_boxes(seg, img, np.array([box, box])).shape == (2, 90, 120)
    assert masks_for_boxes(seg, img, np.zeros((0, 4))).shape == (0, 90, 120)


# --- SAM and GroundingDINO: tiny random configs -------------------------------------------------------------------
def tiny_sam(**kwargs: Any) -> Any:
    import transformers as t

    vision = t.SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=1, num_attention_heads=2,
                               image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[0], window_size=2,
                               num_pos_feats=8)  # fmt: skip
    prompt = t.SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = t.SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
                                     iou_head_hidden_dim=16)  # fmt: skip
    config = t.SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                         mask_decoder_config=decoder.to_dict())  # fmt: skip
    image_processor = t.SamImageProcessor(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return create_segmenter(kwargs.pop("name", "sam"), model_config=config,
                            processor=t.SamProcessor(image_processor=image_processor), **kwargs)  # fmt: skip


def test_sam_box_prompts_and_cached_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    img, _, box = disk_scene()
    seg = tiny_sam()
    calls = []
    real = seg.model.get_image_embeddings
    monkeypatch.setattr(seg.model, "get_image_embeddings", lambda *a, **k: calls.append(1) or real(*a, **k))
    one = seg.mask_for_box(img, box)
    many = seg.masks_for_boxes(img, np.array([box, [0, 0, 50, 50]]))
    assert one.shape == (90, 120) and one.dtype == bool and many.shape == (2, 90, 120)
    assert np.array_equal(many[0], one)
    assert len(calls) == 1  # one embedding for every prompt on the same image
    assert seg.masks_for_boxes(img, np.zeros((0, 4))).shape == (0, 90, 120)
    assert masks_for_boxes(seg, img, np.array([box])).shape == (1, 90, 120)


def test_sam_whole_image_masks() -> None:
    img, _, box = disk_scene()
    grid = tiny_sam(points_per_side=3, min_predicted_iou=-1e9, nms_iou=1.0).masks(img)
    assert grid.ndim == 3 and grid.shape[1:] == (90, 120) and len(grid) <= 9
    grounded = tiny_sam(name="grounded_sam", detector=FixedProposer([list(box), [0, 0, 40, 40]]))
    assert grounded.name == "grounded_sam"
    assert grounded.masks(img).shape[1:] == (90, 120)


def test_sam_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a processor="):
        create_segmenter("sam", model_config=object())
    with pytest.raises(ConfigError, match="not both"):
        create_segmenter("sam", model="x", model_config=object())
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        create_segmenter("sam", model=str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="cannot load sam checkpoint"):
        create_segmenter("sam", model=str(tmp_path))  # a folder without config.json
    with pytest.raises(ConfigError, match="pass detector= instead"):
        create_segmenter("grounded_sam", proposer=FixedProposer([]))


def tiny_grounding_dino(**kwargs: Any) -> Any:
    import transformers as t

    torch = pytest.importorskip("torch")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "object", "mug", "a", "dog"]
    tokenizer = t.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    backbone = t.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2,
                            out_features=["stage1", "stage2"])  # fmt: skip
    text = t.BertConfig(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    config = t.GroundingDinoConfig(backbone_config=backbone, text_config=text, use_timm_backbone=False,
                                   use_pretrained_backbone=False, d_model=32, encoder_layers=1, decoder_layers=2,
                                   encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                   decoder_attention_heads=2, num_queries=10, num_feature_levels=2,
                                   encoder_n_points=1, decoder_n_points=1, max_text_len=16)  # fmt: skip
    image_processor = t.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    torch.manual_seed(0)
    processor = t.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return create_grounding_dino(model_config=config, processor=processor, **kwargs)


def test_grounding_dino_detect_propose_and_best_box() -> None:
    img, _, _ = disk_scene()
    det = tiny_grounding_dino(box_threshold=0.0, text_threshold=0.0, max_proposals=4)
    dets = det.detect(img, ["a mug", "dog"])
    assert isinstance(dets, Detections) and 0 < len(dets) <= 10
    assert (dets.xyxy[:, [0, 2]] <= 120).all() and (dets.xyxy[:, [1, 3]] <= 90).all() and (dets.xyxy >= 0).all()
    assert list(dets.scores) == sorted(dets.scores, reverse=True)
    assert all(set(n.split()) <= {"a", "mug", "dog"} for n in dets.names)  # words of the prompt only
    proposals = det.propose(img)
    assert proposals.shape[1] == 4 and 0 < len(proposals) <= 4
    box, score = det.best_box(img, "mug")
    assert isinstance(box, Box) and 0 <= score <= 1
    strict = tiny_grounding_dino(box_threshold=1.01)
    assert strict.best_box(img, "mug") is None and strict.propose(img).shape == (0, 4)


@pytest.mark.parametrize(
    ("labels", "text"), [("Mug", "mug."), (["a mug.", " dog "], "a mug. dog."), ("", None), ([], None)]
)
def test_prompt_text(labels, text) -> None:
    if text is None:
        with pytest.raises(ConfigError, match="non-empty phrase"):
            prompt_text(labels)
    else:
        assert prompt_text(labels) == text


def test_grounding_dino_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a processor="):
        create_grounding_dino(model_config=object())
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        create_grounding_dino(model=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"grounding_dino: .*nope"):
        create_grounding_dino(nope=1)
