"""Benchmark: `matching` vs `template` on the built-in real-photo episodes, side by side in one run.

`matching_before` is the matching engine as it was before the shared region matcher (MobileNetV2 s16, SSD only,
3x3 layout bonus, no whole-image box, no view variants), kept so the change is measured in the same run.

Reports, per engine and k in (1, 2, 4): mIoU (strict: a miss or a wrong "absent" scores 0), the fractions of absent
queries rejected and of present ones wrongly rejected, and latency per query (supports embedded on first use, so
this includes cold support encodes). Then the latency per query of a 640x480 query against 4 supports that are
already cached, which is what a stream of frames against one concept costs.

    .venv/bin/python benchmarks/localize.py [--threads 2] [--out benchmarks/results/localize.json]

Latency depends on what else runs on the machine; the load average before and after is written with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import torch
from tqdm.auto import tqdm

from focuskit.core.episode import Episode
from focuskit.core.image import load_image
from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.eval.metrics import summarize
from focuskit.localizers import Localizer, create_localizer

ENGINES = ("matching_before", "matching", "template")
BEFORE = dict(
    encoder_options={},
    proposals=["ssd"],
    max_proposals=100,
    whole_image=False,
    hflip=False,
    zoom_out=[],
    layout_weight=0.3,
    refine_top=0,
)


def create_engine(name: str) -> Localizer:
    if name == "matching_before":
        from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer

        loc = MatchingLocalizer(MatchingConfig(**BEFORE))
        loc.name = "matching_before"  # type: ignore[misc]
        return loc
    return create_localizer(name)


SHOTS = (1, 2, 4)


def run_engine(localizer: Localizer, episodes: list[Episode], shots: tuple[int, ...]) -> list[dict[str, Any]]:
    """Accuracy and per-query latency at each k (episodes with fewer than k supports are skipped)."""
    rows = []
    for k in shots:
        usable = [ep.with_shots(k) for ep in episodes if ep.k >= k]
        preds, truths, seconds = [], [], []
        for ep in tqdm(usable, desc=f"{localizer.name} k={k}", unit="ep", leave=False):
            start = time.perf_counter()
            pred = localizer.localize(ep.supports, ep.query_image)
            seconds.append(time.perf_counter() - start)
            preds.append(pred.box)
            truths.append(ep.query_box)
        s = summarize(k, preds, truths, sum(seconds))
        rows.append(
            {
                "k": k,
                "episodes": s.episodes,
                "miou": round(s.miou, 4),
                "acc_at_50": round(s.acc_at_50, 4),
                "absent": s.absent,
                "absent_rejected": s.absent_rejected,
                "present_rejected": s.present_rejected,
                "latency_s_mean": round(statistics.fmean(seconds), 4),
                "latency_s_median": round(statistics.median(seconds), 4),
            }
        )
    return rows


def cached_latency(localizer: Localizer, episodes: list[Episode], repeats: int) -> dict[str, float]:
    """Latency of 640x480 queries against the 4 supports of one episode, after a warm-up call fills the cache."""
    ep = next(e for e in episodes if e.k >= 4 and load_image(e.query_image).size == (640, 480))
    queries = [e.query_image for e in episodes if load_image(e.query_image).size == (640, 480)]
    supports = ep.supports[:4]
    localizer.localize(supports, ep.query_image)  # warm-up: loads models, embeds and caches the supports
    seconds, cpu = [], []
    for i in range(repeats):
        query = load_image(queries[i % len(queries)])
        start, start_cpu = time.perf_counter(), time.process_time()
        localizer.localize(supports, query)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "queries": repeats,
        "median_s": round(statistics.median(seconds), 4),
        "mean_s": round(statistics.fmean(seconds), 4),
        "min_s": round(min(seconds), 4),
        # CPU seconds of this process: with --threads 1 this is close to the wall time on an otherwise idle machine,
        # so it is the figure to read when other jobs share the CPUs.
        "median_cpu_s": round(statistics.median(cpu), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--repeats", type=int, default=12, help="queries timed for the cached-support latency")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "localize.json")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    episodes = load_episodes(realphotos_episodes())
    load_before = os.getloadavg()
    results: dict[str, Any] = {"engines": {}}
    for name in ENGINES:
        localizer = create_engine(name)
        rows = run_engine(localizer, episodes, SHOTS)
        results["engines"][name] = {
            "by_k": rows,
            "cached_640x480_k4": cached_latency(localizer, episodes, args.repeats),
        }
    load_after = os.getloadavg()

    m, t = results["engines"]["matching"], results["engines"]["template"]
    ratios = {
        str(a["k"]): round(a["miou"] / b["miou"], 3) if b["miou"] > 0 else None
        for a, b in zip(m["by_k"], t["by_k"], strict=True)
    }
    results["miou_ratio_matching_over_template"] = ratios
    results["goals"] = {
        "miou_ratio_at_least_1.5": all(r is not None and r >= 1.5 for r in ratios.values()),
        "matching_cached_latency_at_most_0.25s_wall": m["cached_640x480_k4"]["median_s"] <= 0.25,
        "matching_cached_latency_at_most_0.25s_cpu": m["cached_640x480_k4"]["median_cpu_s"] <= 0.25,
    }
    results["environment"] = {
        "episodes": len(episodes),
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "cpus": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
    }

    b = results["engines"]["matching_before"]
    results["matching_after_minus_before"] = {
        str(x["k"]): {
            "miou": round(x["miou"] - y["miou"], 4),
            "absent_rejected": None
            if x["absent_rejected"] is None
            else round(x["absent_rejected"] - y["absent_rejected"], 4),
        }
        for x, y in zip(m["by_k"], b["by_k"], strict=True)
    }
    print(f"{len(episodes)} real-photo episodes; torch threads {torch.get_num_threads()}, "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    header = (
        f"{'engine':16} {'k':>2} {'eps':>4} {'mIoU':>6} {'Acc@.5':>7} {'abs.rej':>8} {'pres.rej':>9} {'s/query':>8}"
    )
    print(header)
    for name in ENGINES:
        for r in results["engines"][name]["by_k"]:
            ab = "-" if r["absent_rejected"] is None else f"{100 * r['absent_rejected']:.0f}%"
            pr = "-" if r["present_rejected"] is None else f"{100 * r['present_rejected']:.0f}%"
            print(
                f"{name:16} {r['k']:>2} {r['episodes']:>4} {r['miou']:>6.3f} {r['acc_at_50']:>7.3f} {ab:>8} {pr:>9} "
                f"{r['latency_s_mean']:>8.3f}"
            )
    print("mIoU matching / template: " + ", ".join(f"k={k}: {v}x" for k, v in ratios.items()))
    for name in ENGINES:
        c = results["engines"][name]["cached_640x480_k4"]
        print(
            f"{name}: 640x480 query, 4 cached supports: median {c['median_s']:.3f} s wall (min {c['min_s']:.3f} s), "
            f"{c['median_cpu_s']:.3f} s CPU"
        )
    atomic_write_json(args.out, results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
