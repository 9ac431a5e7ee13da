"""`detect` boxes only, with masks, and with mask re-ranking, on the built-in real-photo episodes, side by side.

Per episode, one concept memory is made from the episode's supports (their boxes, with GrabCut masks stored at add
time), and the query goes through the same `ConceptDetector` four times: boxes only without edge refinement (the
detector before `DetectorConfig.refine`), boxes only (the default), with the GrabCut
segmenter (the same boxes, each with its mask: checked), and with `mask_rerank` (the best 8 candidates above tau
re-ranked by mask against the stored mask embeddings). Presence is decided by the box score in all three, so only
the chosen box can differ. Reported: mean IoU of the top detection with the true box
on present queries (0 when nothing is detected), acc@0.5, recall, absent queries with a false detection, and the
seconds per query of each variant. Nothing here was tuned on these episodes (rerank_top 8 comes from
benchmarks/mask_pooling.py, whose candidates differ).

    python benchmarks/detect_mask_rerank.py     # writes benchmarks/results/detect_mask_rerank.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from focuskit.core.box import box_iou_batch
from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.memory.store import ConceptMemory
from focuskit.models.segmenters import create_segmenter
from focuskit.personalize.detector import ConceptDetector, DetectorConfig

RESULTS = Path(__file__).parent / "results" / "detect_mask_rerank.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    episodes = load_episodes(realphotos_episodes())[: opts.limit]
    segmenter = create_segmenter("grabcut")
    rows = []
    seconds = {"box, unrefined": 0.0, "box": 0.0, "box + masks": 0.0, "mask rerank": 0.0}
    with tempfile.TemporaryDirectory(prefix="focuskit-rerank-") as tmp:
        for i, ep in enumerate(episodes):
            with ConceptMemory(Path(tmp) / f"m{i}") as mem:
                mem.add("x", [s.image for s in ep.supports], boxes=[s.box for s in ep.supports], segmenter=segmenter)
                row = {"id": ep.id, "present": ep.query_box is not None}
                variants = {
                    "box, unrefined": ConceptDetector(mem, config=DetectorConfig(refine=False)),  # before refinement
                    "box": ConceptDetector(mem),
                    "box + masks": ConceptDetector(mem, segmenter=segmenter),
                    "mask rerank": ConceptDetector(mem, config=DetectorConfig(mask_rerank=True), segmenter=segmenter),
                }
                for name, det in variants.items():
                    start = time.perf_counter()
                    dets = det.detect(ep.query_image)
                    seconds[name] += time.perf_counter() - start
                    found = len(dets) > 0
                    iou = 0.0
                    if found and ep.query_box is not None:
                        iou = float(box_iou_batch(dets.xyxy[:1], [ep.query_box.to_xyxy()])[0, 0])
                    score = float(dets.scores[0]) if found else None
                    row[name] = {"found": found, "iou": round(iou, 4), "score": score}
                rows.append(row)
                print(ep.id, row["box"], row["mask rerank"], flush=True)
                if row["box"]["iou"] != row["box + masks"]["iou"]:
                    raise SystemExit(f"{ep.id}: masks changed the box ({row['box']} vs {row['box + masks']})")
    summary = {}
    present = [r for r in rows if r["present"]]
    absent = [r for r in rows if not r["present"]]
    for name in seconds:
        ious = np.array([r[name]["iou"] for r in present])
        summary[name] = {
            "present": len(present), "absent": len(absent),
            "miou": round(float(ious.mean()), 4) if len(ious) else None,
            "acc_at_50": round(float((ious >= 0.5).mean()), 4) if len(ious) else None,
            "recall": round(float(np.mean([r[name]["found"] for r in present])), 4) if present else None,
            "false_detections_on_absent": int(sum(r[name]["found"] for r in absent)),
            "seconds_per_query": round(seconds[name] / max(1, len(rows)), 3),
        }  # fmt: skip
    atomic_write_json(opts.out, {"episodes": str(realphotos_episodes()), "summary": summary, "rows": rows})
    for name, s in summary.items():
        fp = f"{s['false_detections_on_absent']}/{s['absent']}"
        print(f"{name:12s} mIoU {s['miou']}  acc@.5 {s['acc_at_50']}  recall {s['recall']}  absent FP {fp}  "
              f"{s['seconds_per_query']} s/query")  # fmt: skip
    print(f"written {opts.out}")


if __name__ == "__main__":
    main()
