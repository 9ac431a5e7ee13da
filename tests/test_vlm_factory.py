"""load_vlm: clear errors before any weights load, LoRA on the language model only, adapter checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms import LoraSettings, VLMBundle, build_tiny_vlm, inspect_checkpoint, load_vlm
from focuskit.models.vlms.factory import apply_lora, resolve_attn_implementation
from focuskit.models.vlms.prompts import PromptConfig, save_prompt_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    bundle = build_tiny_vlm()
    bundle.prompt = PromptConfig(min_pixels=bundle.prompt.min_pixels, max_pixels=bundle.prompt.max_pixels)
    return bundle.save(path)


def _inputs(bundle: VLMBundle) -> dict[str, torch.Tensor]:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    text = "<|vision_start|><|image_pad|><|vision_end|>(1,2),(3,4)"
    return dict(bundle.processor(text=[text], images=[img], return_tensors="pt"))


def _write(path: Path, data: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "model path not found"),
        (lambda p: (p / "file.bin").write_bytes(b"x") and p / "file.bin", "is a file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
        (lambda p: _write(p / "gpt2", {"model_type": "gpt2"}), "'gpt2' model; supported architectures"),
        (lambda p: _write(p / "list", [1, 2]), "must hold a JSON object"),
    ],
)  # fmt: skip
def test_bad_paths_fail_before_loading_weights(tmp_path: Path, setup, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_vlm(setup(tmp_path))


def test_adapter_without_base_model_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelError, match="base model"):
        inspect_checkpoint(tmp_path)


def test_hub_ids_are_tried_only_when_not_local_and_fail_clearly_offline() -> None:
    # conftest blocks the network and sets HF_HUB_OFFLINE: the hub lookup fails, as a ModelError.
    with pytest.raises(ModelError, match="not a local directory"):
        inspect_checkpoint("someone/not-a-real-focuskit-model")


def test_four_bit_is_refused_without_a_gpu(tiny_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="load_in_4bit needs a CUDA GPU"):
        load_vlm(tiny_dir, load_in_4bit=True)


def test_flash_attention_is_strict_and_auto_falls_back() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="flash_attention_2"):
        resolve_attn_implementation("flash_attention_2")
    assert resolve_attn_implementation("auto") == "sdpa"
    assert resolve_attn_implementation("eager") == "eager"
    with pytest.raises(ConfigError, match="attn_implementation"):
        resolve_attn_implementation("fast")  # type: ignore[arg-type]


def test_dtype_and_attention_are_applied(tiny_dir: Path) -> None:
    bundle = load_vlm(tiny_dir, dtype="bfloat16", attn_implementation="eager")
    assert bundle.model.dtype == torch.bfloat16
    assert bundle.model.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="dtype"):
        load_vlm(tiny_dir, dtype="float8")  # type: ignore[arg-type]


def test_lora_targets_language_model_projections_only(tiny_dir: Path) -> None:
    bundle = load_vlm(tiny_dir, lora=LoraSettings())
    model = bundle.model
    lora_modules = [n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A")]
    layers = model.get_base_model().config.text_config.num_hidden_layers
    assert len(lora_modules) == 7 * layers
    assert all(".language_model." in n for n in lora_modules)
    assert {n.rsplit(".", 1)[1] for n in lora_modules} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"
    }  # fmt: skip
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"r": 0}, "lora.r"), ({"dropout": 1.0}, "dropout"), ({"target_modules": []}, "at least one"),
     ({"target_modules": ["q_proj|.*"]}, "plain module names")],
)  # fmt: skip
def test_bad_lora_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoraSettings(**kwargs)


def test_lora_on_missing_modules_is_a_model_error(tiny_dir: Path) -> None:
    bundle = load_vlm(tiny_dir)
    with pytest.raises(ModelError, match="cannot apply LoRA"):
        apply_lora(bundle.model, LoraSettings(target_modules=["no_such_proj"]))


def test_adapter_checkpoint_loads_base_plus_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    bundle = load_vlm(tiny_dir, lora=LoraSettings())
    with torch.no_grad():  # make the adapter change the output (LoRA B starts at zero)
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    bundle.model.eval()
    adapter_dir = tmp_path / "adapter"
    bundle.model.save_pretrained(adapter_dir)
    save_prompt_config(PromptConfig(allow_absent=True), adapter_dir)
    info = inspect_checkpoint(adapter_dir)
    assert info.adapter == str(adapter_dir) and info.source == str(tiny_dir) and info.family == "qwen2_vl"

    loaded = load_vlm(adapter_dir)
    assert loaded.prompt.allow_absent is True  # the adapter's prompt config wins over the base's
    base = load_vlm(tiny_dir)
    inputs = _inputs(loaded)
    with torch.no_grad():
        expected = bundle.model(**inputs).logits
        assert torch.allclose(loaded.model(**inputs).logits, expected, atol=1e-5)
        assert not torch.allclose(base.model(**inputs).logits, expected, atol=1e-3)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    trainable = load_vlm(adapter_dir, lora=LoraSettings())
    assert any(p.requires_grad for p in trainable.model.parameters())
