"""A few hundred SFT steps of the tiny Qwen2-VL on synthetic episodes: do both losses fall and the margin rise?

Runs `train_sft` (the code `focuskit train sft` runs) from `configs/sft_tiny.yaml` on freshly generated synthetic
episodes, then compares the mean of each logged metric over the first and the last fifth of the run. Writes the
full log history and the comparison to `benchmarks/results/sft_tiny_trends.json`.

    .venv/bin/python benchmarks/sft_tiny_trends.py                      # 300 steps
    .venv/bin/python benchmarks/sft_tiny_trends.py --steps 100 attention_loss.weight=0.5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from focuskit.core.io import atomic_write_json
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.training.config_io import load_training_config
from focuskit.training.run_sft import train_sft
from focuskit.training.sft_config import SFTConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "sft_tiny_trends.json"
METRICS = ("lm_loss", "attn_loss", "attn_margin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "sft_tiny.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="SFTConfig overrides key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        base = load_training_config(SFTConfig, args.config)
        shots = base.shots or 2
        synth = SynthConfig(episodes=args.episodes, shots=shots, image_size=112, objects=3, seed=0)
        data = write_synth_dataset(synth, tmp / "data", progress=False)
        overrides = [
            f"data=[{data}]",
            f"output_dir={tmp / 'run'}",
            f"max_steps={args.steps}",
            f"save_steps={args.steps}",
            "logging_steps=5",
            *args.overrides,
        ]
        config = load_training_config(SFTConfig, args.config, overrides)
        start = time.perf_counter()
        result = train_sft(config)
        seconds = time.perf_counter() - start

    fifth = max(1, len(result.series("lm_loss")) // 5)
    trends = {}
    for key in METRICS:
        values = result.series(key)
        if values:
            trends[key] = {"first": statistics.mean(values[:fifth]), "last": statistics.mean(values[-fifth:])}
    report = {
        "steps": result.global_step,
        "seconds": seconds,
        "config": str(args.config),
        "overrides": args.overrides,
        "trends_first_vs_last_fifth": trends,
        "attention_skipped": result.attention_skipped,
        "log_history": result.log_history,
    }
    atomic_write_json(args.out, report)
    print(f"{result.global_step} steps in {seconds:.0f} s; mean over the first vs the last fifth of the logs:")
    for key, t in trends.items():
        print(f"  {key:<12} {t['first']:.6g} -> {t['last']:.6g}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
