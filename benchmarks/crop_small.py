"""Crop re-embedding of small regions on the shared matcher's path, off vs on, side by side in one run.

`MatcherConfig.crop_small_cells = T` re-embeds support views covering fewer than T feature cells from a crop (a
`crop` variant) and, per query, the best 8 candidates by the ordinary score that cover fewer than T cells, which are
then re-scored (`focuskit.models.regions`). Measured with the real surfaces (`MatchingLocalizer`, `ConceptDetector`):

1. tuning: T in `THRESHOLDS` on the *tuning* half of the small-object episodes (benchmarks/mask_pooling.py's 3x3
   grids; episodes of the cup, chess and bikes sources); the T with the best strict mIoU (ties: the smaller T) is
   chosen there and only there;
2. report, off vs the chosen T: the 31 built-in real-photo episodes through `localize` (mIoU k=1/2/4, absent
   rejection, latency; `benchmarks/localize.py`'s loop) and through `detect` (one memory per episode, as
   benchmarks/detect_mask_rerank.py), and the *held-out* half of the grid episodes (box, packet, motorcycle, can
   sources) through both. AUROC: present vs absent episode scores.

    python benchmarks/crop_small.py [--grid /tmp/crop-grid] [--out benchmarks/results/crop_small.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from localize import cached_latency, run_engine
from mask_pooling import auroc, family, grid_episodes

from focuskit.core.box import box_iou_batch
from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer
from focuskit.matcher import MatcherConfig
from focuskit.memory.config import AugmentConfig, MemoryConfig
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import ConceptDetector

RESULTS = Path(__file__).parent / "results" / "crop_small.json"
THRESHOLDS = (16.0, 32.0, 64.0)
TUNE_FAMILIES = {"cup", "chess", "bikes"}


def localizer(cells: float) -> MatchingLocalizer:
    return MatchingLocalizer(MatchingConfig(crop_small_cells=cells))


def grid_localize(cells: float, episodes: list[Any]) -> dict[str, Any]:
    """Strict mIoU (a wrong 'absent' or a box on an absent query scores 0), AUROC, seconds per query; all shots."""
    loc = localizer(cells)
    ious, pos, neg, secs = [], [], [], []
    for ep in episodes:
        t0 = time.perf_counter()
        pred = loc.localize(ep.supports, ep.query_image)
        secs.append(time.perf_counter() - t0)
        if ep.query_box is None:
            neg.append(pred.score)
            ious.append(1.0 if pred.box is None else 0.0)
        else:
            pos.append(pred.score)
            iou = 0.0 if pred.box is None else float(box_iou_batch(pred.box.to_array()[None], [ep.query_box])[0, 0])
            ious.append(iou)
    return {
        "episodes": len(episodes),
        "miou_strict": round(float(np.mean(ious)), 4),
        "auroc": round(auroc(pos, neg), 4),
        "absent_rejected": round(float(np.mean([s < loc.tau for s in neg])), 4),
        "seconds_per_query": round(statistics.fmean(secs), 3),
    }


def detect(cells: float, episodes: list[Any], tmp: Path) -> dict[str, Any]:  # tmp: a fresh folder per call
    """`detect` with one memory per episode (views embedded with the same crop setting): mIoU of the top detection
    on present queries (0 when none), acc@0.5, false detections on absent ones, AUROC of the best score."""
    rows = []
    secs = 0.0
    config = MemoryConfig(augment=AugmentConfig(crop_small_cells=cells))
    for i, ep in enumerate(episodes):
        with ConceptMemory(tmp / f"m{i}", config=config) as mem:
            mem.add("x", [s.image for s in ep.supports], boxes=[s.box for s in ep.supports])
            det = ConceptDetector(mem, matcher_config=MatcherConfig(crop_small_cells=cells))
            t0 = time.perf_counter()
            dets = det.detect(ep.query_image)
            secs += time.perf_counter() - t0
            iou = 0.0
            if len(dets) and ep.query_box is not None:
                iou = float(box_iou_batch(dets.xyxy[:1], [ep.query_box.to_xyxy()])[0, 0])
            best = dets.best_scores.get("x")
            rows.append({"present": ep.query_box is not None, "found": len(dets) > 0, "iou": iou,
                         "best": -1.0 if best is None or not np.isfinite(best) else float(best)})  # fmt: skip
    present = [r for r in rows if r["present"]]
    absent = [r for r in rows if not r["present"]]
    ious = np.array([r["iou"] for r in present])
    return {
        "present": len(present),
        "absent": len(absent),
        "miou": round(float(ious.mean()), 4),
        "acc_at_50": round(float((ious >= 0.5).mean()), 4),
        "false_detections_on_absent": int(sum(r["found"] for r in absent)),
        "auroc": round(auroc([r["best"] for r in present], [r["best"] for r in absent]), 4) if absent else None,
        "seconds_per_query": round(secs / max(1, len(rows)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, default=Path(tempfile.gettempdir()) / "focuskit-crop-grid")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--repeats", type=int, default=8, help="queries timed for the cached-support latency")
    args = ap.parse_args()
    real = load_episodes(realphotos_episodes())
    grid = grid_episodes(real, args.grid)
    by_id = {e.id: e for e in real}
    tune = [g for g in grid if family(str(by_id[g.id.split("-grid-")[0]].query_image)) in TUNE_FAMILIES]
    tune_ids = {g.id for g in tune}
    held = [g for g in grid if g.id not in tune_ids]
    print(f"{len(real)} real-photo episodes; grid: {len(tune)} tuning, {len(held)} held-out", flush=True)
    out: dict[str, Any] = {"thresholds": list(THRESHOLDS), "tune_families": sorted(TUNE_FAMILIES)}

    tuning = {}
    for cells in (0.0, *THRESHOLDS):
        tuning[f"{cells:g}"] = grid_localize(cells, tune)
        print(f"tune  T={cells:g}: {tuning[f'{cells:g}']}", flush=True)
    chosen = max(THRESHOLDS, key=lambda t: (tuning[f"{t:g}"]["miou_strict"], -t))
    out["tuning_grid_localize"] = tuning
    out["chosen_cells"] = chosen
    print(f"chosen T={chosen:g} (tuning split only)", flush=True)

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="focuskit-crop-") as tmp:
        for cells in (0.0, chosen):
            name = "off" if cells == 0 else f"crop<{cells:g}"
            loc = localizer(cells)
            rows = run_engine(loc, real, (1, 2, 4))
            report[name] = {
                "real_localize": rows,
                "real_localize_cached_640x480_k4": cached_latency(localizer(cells), real, args.repeats),
                "real_detect": detect(cells, real, Path(tmp) / f"real-{cells:g}"),
                "grid_heldout_localize": grid_localize(cells, held),
                "grid_heldout_detect": detect(cells, held, Path(tmp) / f"grid-{cells:g}"),
            }
            print(name, {k: v for k, v in report[name].items()}, flush=True)
    out["report"] = report
    atomic_write_json(args.out, out)
    print(f"{'variant':10} {'k':>2} {'mIoU':>6} {'abs.rej':>8} {'s/q':>6}")
    for name, r in report.items():
        for row in r["real_localize"]:
            print(f"{name:10} {row['k']:>2} {row['miou']:>6.3f} {row['absent_rejected']:>8} "
                  f"{row['latency_s_mean']:>6.3f}")  # fmt: skip
        c = r["real_localize_cached_640x480_k4"]
        print(f"{name:10} cached 640x480 k=4: median {c['median_s']:.3f} s")
        print(f"{name:10} real detect: {r['real_detect']}")
        print(f"{name:10} grid held-out localize: {r['grid_heldout_localize']}")
        print(f"{name:10} grid held-out detect: {r['grid_heldout_detect']}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
