"""Prompt building and episode encoding: category-free prompts, per-family boxes, and exact attention-loss masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import BoxError, ConfigError, DatasetError
from focuskit.models.vlms import (
    IGNORE_INDEX,
    NOT_PRESENT,
    PromptConfig,
    VLMBundle,
    build_prompt,
    build_tiny_vlm,
    collate_encoded,
    encode_episode,
    episode_answer,
    format_box,
    load_prompt_config,
    save_prompt_config,
)
from focuskit.models.vlms.tiny import TinyVLMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny() -> VLMBundle:
    return build_tiny_vlm()


@pytest.fixture(scope="module")
def tiny25() -> VLMBundle:
    return build_tiny_vlm(TinyVLMConfig(family="qwen2_5_vl"))


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _episode(k: int = 3, query_box: Box | None = Box(10, 12, 40, 44), category: str = "zebra") -> Episode:
    supports = tuple(Support(_noise(64 + 16 * i, 48 + 8 * i, i), Box(4 + i, 5, 30 + i, 33)) for i in range(k))
    return Episode("ep", supports, _noise(90, 70, 99), query_box, meta={"category": category})


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("norm1000_tokens", "<|box_start|>(100,250),(500,750)<|box_end|>"),
        ("resized_pixels_json", '{"bbox_2d": [11, 14, 56, 42]}'),
        ("norm1_list", "[0.100, 0.250, 0.500, 0.750]"),
    ],
)
def test_format_box_per_family(fmt: str, expected: str) -> None:
    assert format_box(Box(20, 20, 100, 60), fmt, (200, 80), (112, 56)) == expected  # type: ignore[arg-type]


def test_prompt_is_category_free_and_ordered(tiny: VLMBundle) -> None:
    ep = _episode()
    built = build_prompt(tiny.processor, ep.supports, ep.query_image, tiny.prompt, family="qwen2_vl")
    assert "zebra" not in built.text
    assert built.text.startswith("<|im_start|>system")
    assert built.text.endswith("<|im_start|>assistant\n")
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    body = built.text[built.text.index(image) :]
    expected = "".join(image + b for b in built.box_texts) + image + "<|im_end|>"
    assert body.startswith(expected)
    assert built.prefix_text + built.suffix_text == built.text
    assert built.suffix_text.startswith(image) and image not in built.suffix_text[len(image) :]
    assert NOT_PRESENT not in built.text
    absent_ok = build_prompt(
        tiny.processor, ep.supports, ep.query_image, PromptConfig(allow_absent=True), family="qwen2_vl"
    )
    assert f'"{NOT_PRESENT}"' in absent_ok.text


def test_qwen2_5_boxes_use_the_processors_resize(tiny25: VLMBundle) -> None:
    ep = _episode(k=1, query_box=Box(0, 0, 90, 70))
    enc = encode_episode(tiny25.processor, ep, with_answer=True, prompt=tiny25.prompt)
    _, h, w = enc.inputs["image_grid_thw"][-1].tolist()
    assert enc.query_resized_size == (w * 14, h * 14)
    assert enc.answer_text == f'{{"bbox_2d": [0, 0, {w * 14}, {h * 14}]}}'


def test_masks_cover_exactly_box_text_and_query_image(tiny: VLMBundle) -> None:
    ep = _episode(k=3)
    enc = encode_episode(tiny.processor, ep, with_answer=True, prompt=tiny.prompt)
    tok = tiny.processor.tokenizer
    ids = enc.inputs["input_ids"][0]
    built = build_prompt(tiny.processor, ep.supports, ep.query_image, tiny.prompt, family="qwen2_vl")
    # M: exactly the support box texts, in order, nothing else.
    assert tok.decode(ids[enc.box_token_mask[0]], skip_special_tokens=False) == "".join(built.box_texts)
    assert int(enc.box_token_mask.sum()) == sum(
        len(tok(b, add_special_tokens=False)["input_ids"]) for b in built.box_texts
    )
    # Q: exactly the last image's visual tokens.
    image_id = tiny.model.config.image_token_id
    q = enc.query_image_mask[0]
    _, h, w = enc.inputs["image_grid_thw"][-1].tolist()
    assert int(q.sum()) == h * w // 4
    assert bool((ids[q] == image_id).all())
    last_start = int((ids == tiny.model.config.vision_start_token_id).nonzero().max())
    assert bool((ids[last_start + 1 :] == image_id).sum() == q.sum())
    assert not bool((q & enc.box_token_mask[0]).any())


def test_llava_prompt_keeps_each_box_after_its_image() -> None:
    """LLaVA-OV's template moves images before text; inline placeholders keep support, box, support, box order."""
    bundle = build_tiny_vlm(TinyVLMConfig(family="llava_onevision"))
    ep = _episode(k=2)
    enc = encode_episode(bundle.processor, ep, with_answer=True, prompt=bundle.prompt)
    tok = bundle.processor.tokenizer
    ids = enc.inputs["input_ids"][0]
    text = tok.decode(ids, skip_special_tokens=False)
    image = "<image>" * 5  # 4 tile tokens + a newline token per image in a multi-image prompt
    built = build_prompt(bundle.processor, ep.supports, ep.query_image, bundle.prompt, family="llava_onevision")
    assert image + built.box_texts[0] + image + built.box_texts[1] + image + "<|im_end|>" in text
    assert tok.decode(ids[enc.box_token_mask[0]], skip_special_tokens=False) == "".join(built.box_texts)
    assert int(enc.query_image_mask.sum()) == 5 and bool(
        (ids[enc.query_image_mask[0]] == tok.convert_tokens_to_ids("<image>")).all()
    )
    assert enc.answer_text == "[0.111, 0.171, 0.444, 0.629]"
    with torch.no_grad():
        assert torch.isfinite(bundle.model(**enc.inputs, labels=enc.labels).loss)


def test_labels_only_on_answer_and_end_of_turn(tiny: VLMBundle) -> None:
    enc = encode_episode(tiny.processor, _episode(), with_answer=True, prompt=tiny.prompt)
    tok = tiny.processor.tokenizer
    labelled = enc.labels[0] != IGNORE_INDEX  # type: ignore[index]
    assert tok.decode(enc.inputs["input_ids"][0][labelled], skip_special_tokens=False) == enc.answer_text + "<|im_end|>"
    # the labelled tokens are the sequence's tail, so the model is trained to answer after the prompt
    assert bool(labelled[-int(labelled.sum()) :].all())
    assert enc.answer_text == "<|box_start|>(111,171),(444,629)<|box_end|>"


def test_inference_encoding_ends_with_generation_prompt(tiny: VLMBundle) -> None:
    enc = encode_episode(tiny.processor, _episode(), with_answer=False, prompt=tiny.prompt)
    assert enc.labels is None and enc.answer_text is None
    tail = tiny.processor.tokenizer.decode(enc.inputs["input_ids"][0][-8:], skip_special_tokens=False)
    assert tail.endswith("<|im_start|>assistant\n")


def test_absent_queries_need_allow_absent(tiny: VLMBundle) -> None:
    ep = _episode(query_box=None)
    with pytest.raises(DatasetError, match="allow_absent"):
        encode_episode(tiny.processor, ep, with_answer=True, prompt=PromptConfig())
    enc = encode_episode(tiny.processor, ep, with_answer=True, prompt=PromptConfig(allow_absent=True))
    assert enc.answer_text == NOT_PRESENT
    # without an answer an absent episode is fine (inference)
    assert encode_episode(tiny.processor, ep, with_answer=False, prompt=PromptConfig()).labels is None


@pytest.mark.parametrize(
    ("supports_box", "query_box", "where"),
    [(Box(0, 0, 500, 20), Box(1, 1, 5, 5), "support 1"), (Box(1, 1, 5, 5), Box(0, 0, 20, 900), "query")],
)
def test_boxes_outside_their_images_are_rejected(
    tiny: VLMBundle, supports_box: Box, query_box: Box, where: str
) -> None:
    ep = Episode("bad", (Support(_noise(64, 48, 0), supports_box),), _noise(64, 48, 1), query_box)
    with pytest.raises(BoxError, match=where):
        encode_episode(tiny.processor, ep, with_answer=True, prompt=tiny.prompt)


def test_episode_answer_matches_encoding(tiny: VLMBundle, tmp_path: Path) -> None:
    ep = _episode()
    query = tmp_path / "q.png"
    ep.query_image.save(query)  # type: ignore[union-attr]
    ep_file = Episode(ep.id, ep.supports, query, ep.query_box)
    enc = encode_episode(tiny.processor, ep_file, with_answer=True, prompt=tiny.prompt)
    answer, size, resized = episode_answer(ep_file, "qwen2_vl", tiny.prompt, tiny.processor)
    assert answer == enc.answer_text
    assert size == enc.query_image_size == (90, 70) and resized == enc.query_resized_size


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_pads_and_keeps_per_sample_results(tiny: VLMBundle, side: str) -> None:
    items = [
        encode_episode(tiny.processor, _episode(k=3), with_answer=True, prompt=tiny.prompt),
        encode_episode(tiny.processor, _episode(k=1), with_answer=True, prompt=tiny.prompt),
    ]
    batch = collate_encoded(items, padding_side=side)  # type: ignore[arg-type]
    n = max(it.length for it in items)
    short = items[1].length
    assert batch["input_ids"].shape == (2, n)
    pad = slice(0, n - short) if side == "left" else slice(short, n)
    assert not batch["attention_mask"][1, pad].any() and not batch["box_token_mask"][1, pad].any()
    assert bool((batch["labels"][1, pad] == IGNORE_INDEX).all())
    assert batch["pixel_values"].shape[0] == sum(it.inputs["pixel_values"].shape[0] for it in items)
    assert batch["image_grid_thw"].shape[0] == 3 + 1 + 1 + 1
    # The batched forward gives each sample the logits it gets alone (padding is invisible).
    model_inputs = {k: v for k, v in batch.items() if k not in ("labels", "box_token_mask", "query_image_mask")}
    with torch.no_grad():
        logits = tiny.model(**model_inputs).logits
        for row, it in enumerate(items):
            alone = tiny.model(**it.inputs).logits[0]
            valid = batch["attention_mask"][row].bool()
            assert torch.allclose(logits[row][valid], alone, atol=1e-4)


def test_collate_rejects_empty() -> None:
    from focuskit.core.errors import ModelError

    with pytest.raises(ModelError, match="at least one"):
        collate_encoded([])


def test_prompt_config_round_trips_and_validates(tmp_path: Path) -> None:
    cfg = PromptConfig(allow_absent=True, max_pixels=50_000, box_format="norm1_list")
    save_prompt_config(cfg, tmp_path)
    assert load_prompt_config(tmp_path) == cfg
    assert load_prompt_config(tmp_path / "nowhere") is None
    (tmp_path / "focuskit_prompt.yaml").write_text("max_pixel: 10\n")
    with pytest.raises(ConfigError, match="unknown key 'max_pixel'"):
        load_prompt_config(tmp_path)
    with pytest.raises(ConfigError, match="max_pixels"):
        PromptConfig(min_pixels=100, max_pixels=10)
    with pytest.raises(ConfigError, match="box_format"):
        PromptConfig(box_format="xywh")  # type: ignore[arg-type]


def test_default_instruction_is_the_papers_and_ours_stays_selectable(tmp_path: Path) -> None:
    from focuskit.models.vlms.prompts import FOCUSKIT_INSTRUCTION, PAPER_INSTRUCTION

    assert PromptConfig().instruction == PAPER_INSTRUCTION
    # The paper's section 5.1 sentences, including the output-format one the earlier paraphrase dropped.
    assert PAPER_INSTRUCTION.startswith("Locate the same object across the sequence of frames shown below.")
    assert PAPER_INSTRUCTION.endswith("in the following format: <answer>[x_min, y_min, x_max, y_max]</answer>")
    assert PromptConfig(instruction="focuskit").instruction == FOCUSKIT_INSTRUCTION
    assert PromptConfig(instruction="Find it.").instruction == "Find it."
    path = save_prompt_config(PromptConfig(instruction="focuskit"), tmp_path)
    import yaml

    # Saved as its text, not the preset's name, so a later edit of the preset cannot change a checkpoint's prompt.
    assert yaml.safe_load(path.read_text())["instruction"] == FOCUSKIT_INSTRUCTION
    assert load_prompt_config(tmp_path).instruction == FOCUSKIT_INSTRUCTION


def test_episode_messages_are_what_build_prompt_renders(tiny: VLMBundle) -> None:
    from focuskit.models.vlms import parse_box
    from focuskit.models.vlms.prompts import episode_messages

    supports = [Support(_noise(64, 48, 1), Box(2, 3, 30, 40)), Support(_noise(56, 56, 2), Box(5, 5, 20, 20))]
    built = build_prompt(tiny.processor, supports, _noise(60, 50, 3), tiny.prompt, family=tiny.family)
    messages = episode_messages(tiny.family, tiny.prompt, built.box_texts)
    rendered = tiny.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == built.text
    assert parse_box("<answer>[100, 200, 300, 400]</answer>", "qwen2_vl", (640, 480)).ok  # the paper's answer form
