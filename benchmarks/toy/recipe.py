"""The toy's training recipe: build the CNN-eyed Qwen2-VL, then train it in stages through `train_sft`.

Stages (each one `train_sft` call, full fine-tuning of the language model and the projector, CNN frozen):

1. `locate`: one object per frame, "find the object, write its box" (region -> box text): the stand-in for the
   grounding a real Qwen2-VL brings from pretraining.
2. `copy`: instance episodes in which some queries are one of their supports (box text -> region -> box text).
3. the instance task itself (the paper's SFT), optionally with the attention loss.

GRPO goes through `grpo_stage`, one small function, so switching to the TRL-based trainer is a one-place change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_DEFAULTS: dict[str, Any] = {
    "num_layers": 10, "hidden_size": 96, "intermediate_size": 256, "num_heads": 4, "num_kv_heads": 2,
    "min_pixels": 112 * 112, "max_pixels": 112 * 112,
}  # fmt: skip


@dataclass
class Stage:
    """One `train_sft` run."""

    data: str
    steps: int
    lr: float
    batch_size: int = 8
    attention: dict[str, Any] | None = None
    """`AttentionLossConfig` fields, or None for no attention loss."""
    lora: bool = False
    seed: int = 0
    bf16: bool = False
    pointer: dict[str, Any] | None = None
    """`grounding.PointerConfig` fields: attention supervision of the "match" pretraining stand-in (None: off)."""
    extra: dict[str, Any] = field(default_factory=dict)


def build_base(directory: Path, model: dict[str, Any], seed: int) -> Path:
    from focuskit.models.vlms.cnn_qwen2_vl import CNNVLMConfig, build_cnn_vlm

    return build_cnn_vlm(CNNVLMConfig(**model, seed=seed)).save(directory)


def precompute_features(model_dir: str | Path, frames: list[Path], out: Path, chunk: int = 64) -> dict[str, float]:
    """Run the frozen CNN once over every frame, exactly as training will see it, and save the features.

    Frames go through the checkpoint's own image processor (same resize and normalisation as `encode_episode`,
    hence the same cache keys) in chunks, then the tower; workers `load_features(out)` before training so no run
    recomputes them. The first frame is re-encoded through `encode_episode` to check the keys really match.
    """
    import torch
    from PIL import Image

    from focuskit.core.box import Box
    from focuskit.core.episode import Episode, Support
    from focuskit.models.vlms import encode_episode, load_vlm
    from focuskit.models.vlms.cnn_qwen2_vl import save_features, vision_tower
    from focuskit.models.vlms.prompts import processor_image_kwargs

    t0 = time.perf_counter()
    bundle = load_vlm(model_dir, dtype="float32")
    tower = vision_tower(bundle.model)
    if tower is None:
        raise ValueError(f"{model_dir} has no CNN vision tower")
    tower.cache_size = max(tower.cache_size, len(frames) + 1)
    kwargs = processor_image_kwargs(bundle.family, bundle.prompt)
    for start in range(0, len(frames), chunk):
        images = []
        for path in frames[start : start + chunk]:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        enc = bundle.processor.image_processor(images=images, return_tensors="pt", **kwargs)
        with torch.no_grad():
            tower(enc["pixel_values"], enc["image_grid_thw"])
    misses = tower.cache_misses
    with Image.open(frames[0]) as im:
        box = Box(0, 0, *im.size)
    ep = Episode(id="check", supports=(Support(frames[0], box),), query_image=frames[0], query_box=None)
    enc = encode_episode(bundle.processor, ep, with_answer=False, prompt=bundle.prompt, family=bundle.family)
    with torch.no_grad():
        tower(enc.inputs["pixel_values"], enc.inputs["image_grid_thw"])
    if tower.cache_misses != misses:
        raise RuntimeError("precomputed CNN features are keyed differently from encode_episode's images")
    n = save_features(bundle.model, out)
    return {"images": n, "seconds": time.perf_counter() - t0}


def sft_stage(start: str | Path, stage: Stage, out: Path) -> dict[str, Any]:
    """Train `start` on `stage`; returns the final model directory, timings and the loss curves."""
    from benchmarks.toy.grounding import PointerConfig, pointer_hooks
    from focuskit.models.vlms.factory import LoraSettings
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import AttentionLossConfig, SFTConfig

    t0 = time.perf_counter()
    attention = AttentionLossConfig(**stage.attention) if stage.attention else AttentionLossConfig(enabled=False)
    fields: dict[str, Any] = {
        "model": str(start), "data": [stage.data], "lora": LoraSettings() if stage.lora else None,
        "attention_loss": attention, "max_steps": stage.steps, "learning_rate": stage.lr,
        "per_device_train_batch_size": stage.batch_size, "warmup_steps": 0.03, "max_grad_norm": 1.0,
        "cache_encoded": False, "output_dir": str(out), "logging_steps": max(1, stage.steps // 25),
        "save_strategy": "no", "disable_tqdm": True, "report_to": "none", "seed": stage.seed, "bf16": stage.bf16,
    }  # fmt: skip
    config = SFTConfig(**{**fields, **stage.extra})
    hooks = pointer_hooks(PointerConfig(**stage.pointer), str(start)) if stage.pointer is not None else None
    result = train_sft(config, hooks)
    keys = ("lm_loss", "attn_loss", "attn_margin", "pointer_search_mass", "pointer_bind_mass", "pointer_gather_mass")
    curves = {key: result.series(key) for key in keys}
    steps = [int(e["step"]) for e in result.log_history if "lm_loss" in e]
    return {
        "model": str(result.final_model),
        "seconds": time.perf_counter() - t0,
        "curve_steps": steps,
        "curves": {k: [round(v, 5) for v in s] for k, s in curves.items() if s},
    }


def grpo_stage(start: str | Path, data: str, out: Path, *, steps: int, lr: float, seed: int) -> dict[str, Any]:
    """GRPO (TRL-based `train_grpo`: LoRA r=8, reference = adapter-disabled start model, reward IoU + format)."""
    from focuskit.training.grpo_config import FocusGRPOConfig
    from focuskit.training.run_grpo import train_grpo

    t0 = time.perf_counter()
    config = FocusGRPOConfig(
        model=str(start), data=[data], output_dir=str(out), num_generations=4, per_device_train_batch_size=8,
        max_steps=steps, learning_rate=lr, lr_scheduler_type="constant_with_warmup", max_completion_length=24,
        temperature=1.0, beta=0.04, save_merged=True, cache_encoded=False, disable_tqdm=True, report_to="none",
        save_strategy="no", seed=seed,
    )  # fmt: skip
    result = train_grpo(config)
    curves = {key: result.series(key) for key in ("reward", "iou", "kl", "box_area_ratio")}
    return {
        "model": str(result.final_model),
        "seconds": time.perf_counter() - t0,
        "curves": {k: [round(v, 5) for v in s] for k, s in curves.items() if s},
        "warnings": list(result.warnings),
    }
