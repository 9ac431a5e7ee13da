"""Auto-box quality: the box the memory proposes for a reference view added without one, against hand boxes.

Every built-in real photo with a hand-checked box (the supports and queries of focuskit/assets/realphotos) is
auto-boxed the way `concept add` without `--box` and `POST /autobox` do it (`memory.autobox.pick_boxes`, the
memory's default encoder and SSD proposer), once per method, in the same run:

* single view: each photo alone (one photo added without a box, nothing to compare it with);
* joint: the photos of one source in groups of up to 4, all without boxes (several views of one object).

Score: IoU with the photo's hand box (the best over its boxes where a photo has two labelled objects), its mean
(mIoU), the share at IoU >= 0.5, and how often the pick covers over 80% of the frame. The photos are split by source:
`--split tune` (box video, box photos, bikes) is where choices were made; `heldout` (cup video with the hand
holding it, chessboard, motorcycle) is what is reported.

    python benchmarks/autobox.py [--split heldout|tune|all] [--out benchmarks/results/autobox.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.box import box_iou_batch
from focuskit.core.image import load_image
from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.memory.autobox import METHODS, pick_boxes
from focuskit.memory.config import ProposerSpec, default_encoder_spec

RESULTS = Path(__file__).parent / "results" / "autobox.json"
TUNE_PREFIXES = ("box_", "bikes_")


def labelled_photos() -> dict[str, list[list[float]]]:
    """Photo path -> its hand boxes (xyxy), from the supports and queries of the built-in episodes."""
    out: dict[str, set[tuple[float, ...]]] = {}
    for ep in load_episodes(realphotos_episodes()):
        for s in ep.supports:
            out.setdefault(str(s.image), set()).add(tuple(s.box.to_xyxy()))
        if ep.query_box is not None:
            out.setdefault(str(ep.query_image), set()).add(tuple(ep.query_box.to_xyxy()))
    return {k: [list(b) for b in sorted(v)] for k, v in sorted(out.items())}


def source_of(path: str) -> str:
    name = Path(path).name
    return name.split("_f")[0] if "_f" in name else name.split("_")[0]


def run(method: str, photos: dict[str, list[list[float]]], encoder: Any, proposer: Any) -> dict[str, Any]:
    images = {p: load_image(p) for p in photos}
    fmaps = {p: encoder.encode(images[p]) for p in photos}
    rows: dict[str, dict[str, Any]] = {p: {} for p in photos}
    t0 = time.perf_counter()
    for p in photos:  # single view
        pick = pick_boxes([images[p]], [fmaps[p]], proposer, method=method)[0]
        rows[p]["single"] = None if pick is None else pick.box.as_list(1)
    single_s = (time.perf_counter() - t0) / max(1, len(photos))
    groups: dict[str, list[str]] = {}
    for p in photos:
        groups.setdefault(source_of(p), []).append(p)
    for members in groups.values():  # joint, groups of up to 4 views of one source
        for i in range(0, len(members), 4):
            part = members[i : i + 4]
            picks = pick_boxes([images[p] for p in part], [fmaps[p] for p in part], proposer, method=method)
            for p, pick in zip(part, picks, strict=True):
                rows[p]["joint"] = None if pick is None else pick.box.as_list(1)
    summary = {}
    for mode in ("single", "joint"):
        ious, whole = [], []
        for p, truth in photos.items():
            box = rows[p][mode]
            w, h = images[p].size
            iou = 0.0 if box is None else float(box_iou_batch(np.array([box]), np.array(truth)).max())
            rows[p][f"{mode}_iou"] = round(iou, 4)
            ious.append(iou)
            whole.append(box is not None and (box[2] - box[0]) * (box[3] - box[1]) > 0.8 * w * h)
        summary[mode] = {
            "miou": round(float(np.mean(ious)), 4),
            "acc_at_50": round(float(np.mean([v >= 0.5 for v in ious])), 4),
            "near_whole_frame": int(sum(whole)),
        }
    summary["single"]["seconds_per_view"] = round(single_s, 3)
    return {"summary": summary, "photos": {Path(p).name: r for p, r in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("heldout", "tune", "all"), default="heldout")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    photos = labelled_photos()
    if args.split != "all":
        tune = args.split == "tune"
        photos = {p: b for p, b in photos.items() if Path(p).name.startswith(TUNE_PREFIXES) == tune}
    encoder, proposer = default_encoder_spec().create(), ProposerSpec().create()
    out: dict[str, Any] = {"split": args.split, "photos": len(photos), "methods": {}}
    print(f"{len(photos)} labelled photos ({args.split})", flush=True)
    for method in args.methods.split(","):
        res = run(method, photos, encoder, proposer)
        out["methods"][method] = res
        for mode, s in res["summary"].items():
            print(f"{method:8s} {mode:6s} mIoU {s['miou']:.3f} acc@.5 {s['acc_at_50']:.2f} "
                  f"near-whole-frame {s['near_whole_frame']}/{len(photos)}", flush=True)  # fmt: skip
    if args.split != "heldout" and args.out == RESULTS:
        args.out = RESULTS.with_name(f"autobox_{args.split}.json")
    atomic_write_json(args.out, out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
