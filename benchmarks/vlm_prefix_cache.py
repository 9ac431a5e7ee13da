"""Support-prefix KV-cache reuse in `VLMLocalizer`: 10 queries sharing 4 supports, with vs without reuse.

The situation it models is a video: the supports stay fixed and every new frame is a query. Without reuse each
query re-encodes all support images in the vision tower and runs the whole prompt through the language model;
with reuse the supports' prefix is computed once and each query costs only its own image, its suffix tokens and
the answer.

Method
------
* Same model, same supports and queries, same batch size and greedy decoding for both variants; the answers are
  compared token for token (they must be identical) before any timing is reported.
* Each timed run localizes all queries (prefix computation included for the reuse variant). Variants are
  interleaved round-robin over `--repeats` runs so load from other processes hits both alike; the median is
  reported, with the ratio of medians.
* Default model: the tiny Qwen2-VL of `configs/vlm_tiny.yaml` with `max_pixels` raised to each `--image-sizes`
  side squared (224 px: 64 visual tokens per image, 448 px: 256). `--model PATH` times a real checkpoint instead.
* One intra-op thread by default: the tiny model's ops are too small to split, and on a shared machine idle
  spinning threads made both variants ~15x slower in our runs.

    .venv/bin/python benchmarks/vlm_prefix_cache.py            # prints a table, writes results JSON
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig
from focuskit.models.vlms import build_prompt, load_tiny_config, load_vlm
from focuskit.models.vlms.prompts import processor_image_kwargs
from focuskit.models.vlms.tiny import build_tiny_vlm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "vlm_prefix_cache.json"


def run_case(bundle: Any, image_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time both variants on one synthetic video (shared supports, `args.queries` query frames)."""
    with tempfile.TemporaryDirectory() as tmp:
        synth = SynthConfig(episodes=args.queries, shots=args.shots, image_size=image_size, seed=0)
        episodes = load_episodes(write_synth_dataset(synth, Path(tmp), progress=False))
        supports = list(episodes[0].supports)
        queries = [ep.query_image for ep in episodes]

        common: dict[str, Any] = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
        variants = {
            "scratch": VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=False, **common)),
            "prefix_reuse": VLMLocalizer(bundle, VLMLocalizerConfig(prefix_cache=True, **common)),
        }
        answers = {name: loc.generate(supports, queries) for name, loc in variants.items()}  # also warms up
        identical = [a.token_ids for a in answers["scratch"]] == [a.token_ids for a in answers["prefix_reuse"]]
        if not identical:
            raise SystemExit("prefix reuse changed the answers: refusing to report timings")

        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, loc in variants.items():
                start = time.perf_counter()
                loc.generate(supports, queries)
                times[name].append(time.perf_counter() - start)

        built = build_prompt(bundle.processor, supports, queries[0], bundle.prompt, family=bundle.family)
        image_kwargs = processor_image_kwargs(bundle.family, bundle.prompt)

        def count(text: str, images: list[Any]) -> int:
            enc = bundle.processor(text=[text], images=images, return_tensors="pt", **image_kwargs)
            return int(enc["input_ids"].shape[1])

        prefix_tokens = count(built.prefix_text, built.images[:-1])
        total_tokens = count(built.text, built.images)

    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "image_size": image_size,
        "prompt_tokens": total_tokens,
        "prefix_tokens": prefix_tokens,
        "answers_identical": identical,
        "seconds_median": med,
        "seconds_all": times,
        "ms_per_query": {name: 1000 * v / args.queries for name, v in med.items()},
        "speedup": med["scratch"] / med["prefix_reuse"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or hub id (default: the tiny model)")
    parser.add_argument("--tiny-config", default=str(ROOT / "configs" / "vlm_tiny.yaml"))
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument(
        "--image-sizes", default="224,448", help="sides of the synthetic frames (pixels), comma-separated"
    )
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="a native Qwen2-VL box answer is ~22 tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: tiny ops gain nothing from more; 0: torch's)"
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.image_sizes.split(",") if s.strip()]

    rows = []
    for side in sizes:
        if args.model:
            bundle = load_vlm(args.model)
        else:
            tiny = load_tiny_config(args.tiny_config, [f"max_pixels={max(side * side, 3136)}"])
            bundle = build_tiny_vlm(tiny)
        rows.append(run_case(bundle, side, args))

    model = args.model or f"tiny {bundle.family} ({sum(p.numel() for p in bundle.model.parameters()):,} params)"
    setup = f"batch {args.batch_size}, {args.max_new_tokens} new tokens, {torch.get_num_threads()} thread(s)"
    print(f"{model}: {args.queries} queries x {args.shots} shared supports, {setup}, median of {args.repeats}")
    print(f"{'frame px':>8}{'prompt tok':>12}{'prefix tok':>12}{'scratch ms/q':>14}{'reuse ms/q':>12}{'speed-up':>10}")
    for r in rows:
        ms = r["ms_per_query"]
        print(f"{r['image_size']:>8}{r['prompt_tokens']:>12}{r['prefix_tokens']:>12}"
              f"{ms['scratch']:>14.1f}{ms['prefix_reuse']:>12.1f}{r['speedup']:>9.2f}x")  # fmt: skip
    print("answers identical with and without reuse: " + ("yes" if all(r["answers_identical"] for r in rows) else "NO"))
    result = {
        "model": model,
        "queries": args.queries,
        "shots": args.shots,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cases": rows,
    }
    atomic_write_json(args.out, result)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
