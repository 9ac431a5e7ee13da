"""GPU readiness checked here: the 7B configs' LoRA setup on the real Qwen2-VL-7B-Instruct architecture, no weights.

The architecture is built from its published config values (no hub access) on accelerate's meta device, so the
~8 B parameters take no memory. The expected trainable count is worked out by hand from the shapes below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from focuskit.models.vlms.factory import LORA_TARGETS, LoraSettings, apply_lora

ROOT = Path(__file__).resolve().parent.parent

# Qwen2-VL-7B-Instruct's config.json (text and vision parts), as published with the checkpoint.
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, VOCAB = 3584, 18944, 28, 28, 4, 152064
VISION = {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "hidden_size": HIDDEN, "patch_size": 14,
          "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}  # fmt: skip


def _expected_lora_parameters(r: int) -> int:
    """r * (d_in + d_out) per adapted linear layer, summed over q/k/v/o/gate/up/down of the 28 decoder layers."""
    head_dim = HIDDEN // HEADS  # 128
    kv = KV_HEADS * head_dim  # 512: grouped-query attention, 4 key/value heads
    shapes = {
        "q_proj": (HIDDEN, HIDDEN),
        "k_proj": (HIDDEN, kv),
        "v_proj": (HIDDEN, kv),
        "o_proj": (HIDDEN, HIDDEN),
        "gate_proj": (HIDDEN, INTERMEDIATE),
        "up_proj": (HIDDEN, INTERMEDIATE),
        "down_proj": (INTERMEDIATE, HIDDEN),
    }
    return LAYERS * sum(r * (d_in + d_out) for d_in, d_out in shapes.values())


def _meta_qwen2vl_7b():
    from accelerate import init_empty_weights
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig

    text = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
    }
    config = Qwen2VLConfig(text_config=text, vision_config=VISION, image_token_id=151655, video_token_id=151656,
                           vision_start_token_id=151652, vision_end_token_id=151653)  # fmt: skip
    with init_empty_weights():
        return AutoModelForImageTextToText.from_config(config)


def _lora_of(config_file: str) -> LoraSettings:
    section = yaml.safe_load((ROOT / "configs" / config_file).read_text())["lora"]
    return LoraSettings(**section)


@pytest.mark.parametrize("config_file", ["sft_qwen2vl_7b.yaml", "grpo_qwen2vl_7b.yaml"])
def test_7b_lora_trains_the_language_model_projections_only(config_file: str) -> None:
    from accelerate import init_empty_weights

    lora = _lora_of(config_file)
    assert lora.r == 8 and sorted(lora.target_modules) == sorted(LORA_TARGETS)
    with init_empty_weights():
        model = apply_lora(_meta_qwen2vl_7b(), lora)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expected = _expected_lora_parameters(lora.r)
    assert expected == 20_185_088  # 720,896 per decoder layer
    assert sum(p.numel() for p in trainable.values()) == expected
    assert all("lora_" in n and ".language_model." in n for n in trainable)
    assert not any(".visual." in n for n in trainable)  # the vision tower's qkv/proj/fc layers stay frozen
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == set(LORA_TARGETS)
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in trainable}
    assert layers == set(range(LAYERS))
    # Everything else, the 7B architecture (about 8.3 B parameters with the vision tower), stays frozen.
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    assert 8.0e9 < frozen < 8.6e9
