#!/usr/bin/env bash
# GPU smoke test: on one NVIDIA GPU, no network, in under 8 minutes. Never part of CI (tests/ does not call it).
#
#   bash benchmarks/gpu_smoke.sh            # from the repository root, with focuskit installed ('focuskit[gpu]')
#   PYTHON=.venv/bin/python bash benchmarks/gpu_smoke.sh
#
# For each variant it can run here, it trains the tiny offline Qwen2-VL (random weights, built locally) with SFT +
# the attention loss (efficient path) for SFT_STEPS steps, then GRPO for GRPO_STEPS steps from that checkpoint, and
# prints peak GPU memory and seconds per step:
#   bf16 + SDPA                        always
#   bf16 + FlashAttention-2            when flash_attn imports (vision tower; the language model runs focuskit's
#                                      SDPA-based attention-loss function)
#   4-bit (QLoRA, bitsandbytes)        when bitsandbytes imports
# On a machine without a CUDA GPU it stops with exit code 2 and one line saying so, after checking what can be
# checked without one (the package imports, the configs parse).
set -euo pipefail

PYTHON="${PYTHON:-python}"
SFT_STEPS="${SFT_STEPS:-20}"
GRPO_STEPS="${GRPO_STEPS:-3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

exec timeout --signal=INT 480 "$PYTHON" - "$SFT_STEPS" "$GRPO_STEPS" <<'PY'
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sft_steps, grpo_steps = int(sys.argv[1]), int(sys.argv[2])

import torch  # noqa: E402

from focuskit.training.config_io import load_training_config  # noqa: E402
from focuskit.training.sft_config import SFTConfig  # noqa: E402

# CPU-checkable part: the shipped configs parse (GPU-only fields switched off here).
load_training_config(SFTConfig, "configs/sft_tiny.yaml")
load_training_config(SFTConfig, "configs/sft_qwen2vl_7b.yaml", ["deepspeed=null", "bf16=false"])
if not torch.cuda.is_available():
    print("gpu_smoke: error: no CUDA GPU visible (torch.cuda.is_available() is False); configs parse, nothing trained")
    sys.exit(2)

from focuskit.cli.main import app  # noqa: E402
from focuskit.data.synth import SynthConfig, write_synth_dataset  # noqa: E402
from focuskit.training.run_sft import train_sft  # noqa: E402

variants = [("bf16+sdpa", ["bf16=true", "attn_implementation=sdpa"])]
if importlib.util.find_spec("flash_attn") is not None:
    variants.append(("bf16+fa2", ["bf16=true", "attn_implementation=flash_attention_2"]))
else:
    print("gpu_smoke: flash_attn not installed: FlashAttention-2 variant skipped")
if importlib.util.find_spec("bitsandbytes") is not None:
    variants.append(("4bit", ["bf16=true", "attn_implementation=sdpa", "load_in_4bit=true"]))
else:
    print("gpu_smoke: bitsandbytes not installed: 4-bit variant skipped")

print(f"gpu_smoke: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
rows = []
with tempfile.TemporaryDirectory() as tmp_dir:
    tmp = Path(tmp_dir)
    data = write_synth_dataset(SynthConfig(episodes=32, shots=2, image_size=112, objects=3, seed=0), tmp / "data",
                               progress=False)  # fmt: skip
    # The tiny model (sft_tiny.yaml's sizes) saved once and loaded like a hub checkpoint, so dtype, the attention
    # kernel and 4-bit quantization go through load_vlm exactly as for Qwen2-VL-7B.
    from focuskit.models.vlms.tiny import build_tiny_vlm

    model = str(build_tiny_vlm(load_training_config(SFTConfig, "configs/sft_tiny.yaml").tiny).save(tmp / "base"))
    for name, extra in variants:
        out = tmp / name
        overrides = [f"model={model}", f"data=[{data}]", f"output_dir={out / 'sft'}", f"max_steps={sft_steps}",
                     f"save_steps={sft_steps}", "logging_steps=5", "disable_tqdm=true", *extra]  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train_sft(load_training_config(SFTConfig, "configs/sft_tiny.yaml", overrides))
        sft_s = (time.perf_counter() - start) / max(result.global_step, 1)
        sft_peak = torch.cuda.max_memory_allocated() / 2**20
        attn = result.series("attn_loss")
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            app(["train", "grpo", "--config", "configs/grpo_tiny.yaml", f"model={result.final_model}",
                 f"data=[{data}]", f"output_dir={out / 'grpo'}", f"max_steps={grpo_steps}", "bf16=true"],
                standalone_mode=False)  # fmt: skip
            grpo = f"{(time.perf_counter() - start) / grpo_steps:.2f} s/step, peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        except SystemExit as exc:  # the CLI's own exit on a user error: report it, keep the other variants
            grpo = f"failed (exit {exc.code})"
        rows.append((name, f"{sft_s:.3f} s/step, peak {sft_peak:.0f} MiB, attn_loss {attn[0]:.4g}->{attn[-1]:.4g}"
                     if attn else f"{sft_s:.3f} s/step, peak {sft_peak:.0f} MiB (no attn_loss logged)", grpo))  # fmt: skip

print(f"{'variant':<12} {'SFT (' + str(sft_steps) + ' steps)':<60} GRPO ({grpo_steps} steps)")
for name, sft, grpo in rows:
    print(f"{name:<12} {sft:<60} {grpo}")
PY
