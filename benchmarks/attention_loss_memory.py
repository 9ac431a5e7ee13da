"""Peak memory and step time of one SFT step without the attention loss, with the efficient loss, and with the eager
reference, on the same batch of the tiny Qwen2-VL at a long sequence (default 4 supports + query, 256 visual tokens
each, about 1,400 tokens).

Method
------
* **Peak memory** is the peak of live tensor bytes allocated during the step (forward, backward, optimizer step),
  above what was already allocated when the step began (weights, optimizer state, the batch). It is read from the
  PyTorch profiler's allocator events (`profile_memory=True`): every CPU allocation and free is recorded with its
  size and time, and the running sum's maximum is the peak. Process RSS is not used: glibc's allocator keeps freed
  pages, so RSS deltas mostly measure allocator history, not the step. The step's own peak is the conservative
  figure: on a 7B model the weights (15 GB in bf16) dwarf a step's activations, so the overhead of the whole
  process would be smaller still.
* **Step time** is the median over `--repeats` steps per variant, variants interleaved round-robin so that load
  from other processes on a shared machine hits all of them alike; the profiler is off while timing.
* One step = `FocusSFTTrainer.compute_loss` (the code training runs) + backward + AdamW step on the LoRA weights.

    .venv/bin/python benchmarks/attention_loss_memory.py            # prints a table, writes results JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms.factory import LoraSettings, apply_lora
from focuskit.models.vlms.tiny import TinyVLMConfig, build_tiny_vlm
from focuskit.training.attention_loss import restore_attention, select_layers, use_box_attention
from focuskit.training.sft_config import AttentionLossConfig
from focuskit.training.sft_data import SFTDataset, collate_for_sft
from focuskit.training.sft_trainer import FocusSFTTrainer

RESULTS = Path(__file__).parent / "results" / "attention_loss_memory.json"
VARIANTS = ("no_loss", "efficient", "eager")


def make_batch(tmp: Path, shots: int, image_size: int, batch_size: int, tiny: TinyVLMConfig) -> tuple[Any, dict]:
    """The tiny model with LoRA, and one collated batch of synthetic episodes at `image_size` pixels."""
    synth = SynthConfig(episodes=batch_size, shots=shots, image_size=image_size, objects=3, seed=0)
    path = write_synth_dataset(synth, tmp / "data", progress=False)
    bundle = build_tiny_vlm(tiny)
    dataset = SFTDataset(load_episodes(path), bundle.processor, bundle.family, bundle.prompt, max_seq_length=100_000)
    batch = collate_for_sft([dataset[i] for i in range(batch_size)])
    model = apply_lora(bundle.model, LoraSettings())
    model.train()
    return model, batch


def make_trainer(model: Any, variant: str, layers: tuple[int, ...], out: Path) -> FocusSFTTrainer:
    from transformers import TrainingArguments

    if variant == "no_loss":
        restore_attention(model)
        loss = AttentionLossConfig(enabled=False)
    else:
        use_box_attention(model, variant)  # type: ignore[arg-type]
        loss = AttentionLossConfig(implementation=variant)  # type: ignore[arg-type]
    args = TrainingArguments(output_dir=str(out), report_to="none", disable_tqdm=True, use_cpu=True)
    return FocusSFTTrainer(model=model, args=args, attention_loss=loss, attention_layers=layers)


def one_step(trainer: FocusSFTTrainer, model: Any, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def peak_step_bytes(step: Any) -> int:
    """Peak of live tensor bytes allocated during `step()`, above the bytes live when it started."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=4, help="support images per episode")
    parser.add_argument("--image-size", type=int, default=448, help="448 px = 256 visual tokens per image")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--layers", choices=["first_k", "last_k", "all"], default="first_k")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings stable when shared)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    pixels = args.image_size * args.image_size
    tiny = TinyVLMConfig(
        num_layers=8, hidden_size=128, intermediate_size=384, num_heads=4, num_kv_heads=2,
        min_pixels=pixels, max_pixels=pixels, max_position_embeddings=8192,
    )  # fmt: skip
    layers = select_layers(args.layers, args.k, tiny.num_layers)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model, batch = make_batch(tmp, args.shots, args.image_size, args.batch_size, tiny)
        trainers = {v: make_trainer(model, v, layers, tmp / v) for v in VARIANTS}
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        seq_len = int(batch["input_ids"].shape[1])
        visual = int(batch["query_image_mask"][0].sum())

        def step(variant: str) -> float:
            if variant == "no_loss":
                restore_attention(model)
            else:
                use_box_attention(model, variant)  # type: ignore[arg-type]
            return one_step(trainers[variant], model, batch, optimizer)

        for v in VARIANTS:  # warm-up: allocator, optimizer state, lazy inits
            step(v)
        peaks = {v: peak_step_bytes(lambda v=v: step(v)) for v in VARIANTS}
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for v in VARIANTS:
                t0 = time.perf_counter()
                step(v)
                times[v].append(time.perf_counter() - t0)

    median = {v: statistics.median(times[v]) for v in VARIANTS}
    base_mem, base_time = peaks["no_loss"], median["no_loss"]
    result = {
        "sequence_length": seq_len,
        "visual_tokens_per_image": visual,
        "images": args.shots + 1,
        "batch_size": args.batch_size,
        "model": {"layers": tiny.num_layers, "hidden": tiny.hidden_size, "heads": tiny.num_heads},
        "loss_layers": list(layers),
        "peak_step_bytes": peaks,
        "median_step_seconds": median,
        "memory_overhead": {v: peaks[v] / base_mem - 1 for v in VARIANTS[1:]},
        "time_overhead": {v: median[v] / base_time - 1 for v in VARIANTS[1:]},
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"one SFT step, tiny Qwen2-VL ({tiny.num_layers} layers, hidden {tiny.hidden_size}), batch {args.batch_size} "
        f"x {seq_len} tokens ({args.shots + 1} images x {visual} visual tokens), loss on layers {list(layers)}"
    )
    print(f"{'variant':<10} {'peak MB':>9} {'vs no loss':>11} {'step s':>8} {'vs no loss':>11}")
    for v in VARIANTS:
        mem_ratio = "" if v == "no_loss" else f"{100 * result['memory_overhead'][v]:+.1f}%"
        time_ratio = "" if v == "no_loss" else f"{100 * result['time_overhead'][v]:+.1f}%"
        print(f"{v:<10} {peaks[v] / 2**20:>9.1f} {mem_ratio:>11} {median[v]:>8.3f} {time_ratio:>11}")
    atomic_write_json(args.out, result)
    print(f"results: {args.out}")
    print(json.dumps({"memory_overhead": result["memory_overhead"], "time_overhead": result["time_overhead"]}))


if __name__ == "__main__":
    main()
