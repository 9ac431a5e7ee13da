"""The tiny offline VLM: a real Qwen2-VL model + processor, a working tokenizer, and HF-style save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms import VLMBundle, build_tiny_vlm, load_tiny_config, load_vlm
from focuskit.models.vlms.tiny import SPECIAL_TOKENS, TinyVLMConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tiny() -> VLMBundle:
    return build_tiny_vlm()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_is_a_real_qwen2_vl_with_its_processor(tiny: VLMBundle) -> None:
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor

    assert isinstance(tiny.model, Qwen2VLForConditionalGeneration)
    assert isinstance(tiny.processor, Qwen2VLProcessor)
    assert isinstance(tiny.processor.image_processor, Qwen2VLImageProcessor)
    assert tiny.processor.video_processor is not None
    assert tiny.family == "qwen2_vl"
    assert tiny.model.config.image_token_id == tiny.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_tokenizer_keeps_special_tokens_and_digits_whole(tiny: VLMBundle) -> None:
    tok = tiny.processor.tokenizer
    for special in SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    ids = tok("(123,45)", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["(", "1", "2", "3", ",", "4", "5", ")"]


@pytest.mark.parametrize(
    "text", ["Grüße, 東京! 🙂 tabs\tand\nnewlines", "<|box_start|>(0,0),(9,9)<|box_end|>", "not present"]
)
def test_tokenizer_round_trips_any_text(tiny: VLMBundle, text: str) -> None:
    tok = tiny.processor.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_processor_inputs_run_forward_and_backward(tiny: VLMBundle) -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "where?"}]}]
    text = tiny.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tiny.processor(text=[text], images=[_noise(112, 112)], return_tensors="pt")
    assert "mm_token_type_ids" in inputs
    image_tokens = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    assert image_tokens == (112 // 28) ** 2  # patch 14, 2x2 merge
    model = build_tiny_vlm().model  # a fresh copy: the shared one stays untouched
    model.train()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.model.visual.patch_embed.proj.weight.grad is not None


def test_seed_makes_weights_reproducible() -> None:
    a = build_tiny_vlm(TinyVLMConfig(seed=3)).model.state_dict()
    b = build_tiny_vlm(TinyVLMConfig(seed=3)).model.state_dict()
    c = build_tiny_vlm(TinyVLMConfig(seed=4)).model.state_dict()
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])


def test_save_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tiny: VLMBundle, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "other_model.bin").write_bytes(b"user data")
    with pytest.raises(ModelError, match="refusing to replace"):
        tiny.save(folder)
    assert (folder / "other_model.bin").read_bytes() == b"user data"


def test_save_and_load_like_a_hub_checkpoint(tiny: VLMBundle, tmp_path: Path) -> None:
    tiny.prompt.allow_absent = True
    try:
        path = tiny.save(tmp_path / "ckpt")
    finally:
        tiny.prompt.allow_absent = False
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file() and (path / "focuskit_prompt.yaml").is_file()
    loaded = load_vlm(path)
    assert loaded.family == "qwen2_vl" and loaded.prompt.allow_absent is True
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>(1,2)<|im_end|>\n"
    a = tiny.processor(text=[text], images=[_noise(80, 60)], return_tensors="pt")
    b = loaded.processor(text=[text], images=[_noise(80, 60)], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with torch.no_grad():
        assert torch.allclose(tiny.model(**a).logits, loaded.model(**b).logits, atol=1e-6)
    # Saving again over the same directory replaces it cleanly.
    tiny.save(path)
    assert not any(p.name.startswith(".ckpt") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("family", "model_cls", "processor_cls", "placeholder"),
    [
        ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", QWEN_IMAGE),
        ("llava_onevision", "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", "<image>"),
    ],
)  # fmt: skip
def test_other_families_build_run_and_reload(
    family: str, model_cls: str, processor_cls: str, placeholder: str, tmp_path: Path
) -> None:
    bundle = build_tiny_vlm(TinyVLMConfig(family=family))  # type: ignore[arg-type]
    assert type(bundle.model).__name__ == model_cls and type(bundle.processor).__name__ == processor_cls
    text = f"{placeholder}a{placeholder}b"
    inputs = bundle.processor(text=[text], images=[[_noise(56, 56, 1), _noise(84, 56, 2)]], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(bundle.model(**inputs).logits).all()
    loaded = load_vlm(bundle.save(tmp_path / family))
    assert loaded.family == family and type(loaded.processor).__name__ == processor_cls


def test_shipped_config_loads() -> None:
    cfg = load_tiny_config(CONFIGS / "vlm_tiny.yaml")
    assert cfg.family == "qwen2_vl" and cfg.max_pixels >= cfg.min_pixels


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hidden_size=66"], "multiple of num_heads"),
        (["num_heads=4", "num_kv_heads=3"], "multiple of num_kv_heads"),
        (["max_pixels=100"], "max_pixels"),
        (["family=llava"], "must be one of"),
        (["layers=3"], "unknown key 'layers'"),
    ],
)
def test_bad_tiny_config_is_a_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_tiny_config(None, overrides)


def test_cli_builds_and_inspects(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "tiny"
    result = runner.invoke(app, ["vlm", "tiny", "--out", str(out), "--set", "num_layers=1"])
    assert result.exit_code == 0, result.output
    assert load_vlm(out).model.config.text_config.num_hidden_layers == 1
    result = runner.invoke(app, ["vlm", "info", str(out)])
    assert result.exit_code == 0 and "family: qwen2_vl" in result.output and "prompt.max_pixels: 12544" in result.output
    result = runner.invoke(app, ["vlm", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "model path not found" in result.output
