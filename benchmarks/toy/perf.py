"""Costs on the CNN-eyed family: attention-loss overhead (peak step memory, step time) and training throughput with
cached vs recomputed frozen-CNN features, on one batch of toy episodes.

Same method as `benchmarks/attention_loss_memory.py` (whose helpers it uses): peak = live tensor bytes above the
step's start from the profiler's allocator events; time = median of interleaved steps. One step =
`FocusSFTTrainer.compute_loss` + backward + AdamW over every trainable weight (full fine-tuning, as the toy trains).
"Uncached" sets the tower's cache size to 0, so every step runs the CNN on every image again (what training would
cost without the cache); encoding (`encode_episode`, the processor) is timed apart: it is paid per episode either way.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.toy.presets import SMALL


def measure(frames_dir: Path, *, repeats: int = 21, batch_size: int = 8) -> dict[str, Any]:
    import torch

    from benchmarks.attention_loss_memory import make_trainer, one_step, peak_step_bytes
    from benchmarks.toy.pool import render_pool, sample_episodes
    from focuskit.data.synth import SynthConfig
    from focuskit.models.vlms.cnn_qwen2_vl import CNNVLMConfig, build_cnn_vlm, vision_tower
    from focuskit.training.attention_loss import restore_attention, select_layers, use_box_attention
    from focuskit.training.sft_data import SFTDataset, collate_for_sft

    torch.manual_seed(0)
    config = SynthConfig(objects=2, seed=7, image_size=112, backgrounds=("gradient",), min_scale=0.25, max_scale=0.45)
    pool = render_pool(config, frames_dir, batch_size, 5)
    episodes = sample_episodes(pool, batch_size, shots=(4, 4), seed=0, distinct=True)
    bundle = build_cnn_vlm(CNNVLMConfig(**SMALL))
    dataset = SFTDataset(episodes, bundle.processor, bundle.family, bundle.prompt, max_seq_length=100_000)
    t0 = time.perf_counter()
    items = [dataset[i] for i in range(batch_size)]
    encode_seconds = (time.perf_counter() - t0) / batch_size
    batch = collate_for_sft(items)
    model = bundle.model
    model.train()
    layers = select_layers("first_k", max(1, min(5, SMALL["num_layers"] // 2)), SMALL["num_layers"])
    out = frames_dir / "trainer"
    trainers = {v: make_trainer(model, v, layers, out / v) for v in ("no_loss", "efficient")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tower = vision_tower(model)
    assert tower is not None
    size = tower.cache_size

    def step(variant: str, cached: bool = True) -> float:
        tower.cache_size = size if cached else 0  # 0 bypasses the cache (no lookup, no store): it stays warm
        if variant == "no_loss":
            restore_attention(model)
        else:
            use_box_attention(model, "efficient")
        return one_step(trainers[variant], model, batch, optimizer)

    variants = {"no_loss": ("no_loss", True), "efficient": ("efficient", True), "uncached": ("no_loss", False)}
    for name, cached in variants.values():  # warm-up: allocator, optimizer state, lazy inits
        step(name, cached)
    peaks = {v: peak_step_bytes(lambda a=a: step(*a)) for v, a in variants.items()}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v, a in variants.items():
            t1 = time.perf_counter()
            step(*a)
            times[v].append(time.perf_counter() - t1)
    restore_attention(model)
    median = {v: statistics.median(t) for v, t in times.items()}
    fastest = {v: min(t) for v, t in times.items()}
    return {
        "batch_size": batch_size,
        "sequence_length": int(batch["input_ids"].shape[1]),
        "model": SMALL,
        "loss_layers": list(layers),
        "peak_step_bytes": peaks,
        "median_step_seconds": median,
        "fastest_step_seconds": fastest,
        "attention_time_overhead_fastest": fastest["efficient"] / fastest["no_loss"] - 1,
        "cache_speedup_fastest": fastest["uncached"] / fastest["no_loss"],
        "attention_memory_overhead": peaks["efficient"] / peaks["no_loss"] - 1,
        "attention_time_overhead": median["efficient"] / median["no_loss"] - 1,
        "episodes_per_second_cached": batch_size / median["no_loss"],
        "episodes_per_second_uncached": batch_size / median["uncached"],
        "encode_seconds_per_episode": encode_seconds,
        "torch_threads": torch.get_num_threads(),
    }
