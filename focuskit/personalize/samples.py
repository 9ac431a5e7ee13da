"""A small real-photo concept set built from the photos scikit-image ships, in the generic concept-folder layout.

No personalization benchmark installs offline, but scikit-image's sample photos do. Three concepts come from them:
"motorbike" (the Middlebury stereo pair: the left photo is the reference, the right one, taken from another
viewpoint, an honest new photo), "cup" (the espresso photo) and "cat" (Chelsea). Positives for the cup and the cat
are their crops, mirrored and rescaled, pasted into other real photos; negatives are real photos without them.
It backs the tests, the default detection threshold sweep (docs/personalize.md), and the quickstart.

Layout written (see `focuskit.data.concepts.read_concept_folders`)::

    <root>/<concept>/references/*.png   + boxes.json
    <root>/<concept>/positives/*.png
    <root>/<concept>/negatives/other/*.png
    <root>/<concept>/context.txt
    <root>/multi.json                   multi-concept test images: [{"image", "query", "present"}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.core.io import atomic_write_json, atomic_write_text


def _rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array).convert("RGB")


def sample_photos() -> dict[str, Image.Image]:
    """The scikit-image photos used here, by short name (RGB)."""
    try:
        from skimage import data
    except ImportError:
        raise DatasetError("the sample photos need scikit-image: pip install scikit-image") from None
    left, right, _ = data.stereo_motorcycle()
    return {
        "motorcycle_left": _rgb(left),
        "motorcycle_right": _rgb(right),
        "coffee": _rgb(data.coffee()),
        "chelsea": _rgb(data.chelsea()),
        "astronaut": _rgb(data.astronaut()),
        "rocket": _rgb(data.rocket()),
        "camera": _rgb(data.camera()),
        "hubble": _rgb(data.hubble_deep_field()),
        "ihc": _rgb(data.immunohistochemistry()),
        "coins": _rgb(data.coins()),
    }


MOTORBIKE_BOX = Box(90, 70, 690, 450)
"""The motorcycle in `motorcycle_left` (741x500), drawn by hand."""
CUP_BOX = Box(75, 15, 480, 390)
"""Cup and saucer in `coffee` (600x400)."""
CAT_BOX = Box(20, 0, 400, 300)
"""Chelsea's head in `chelsea` (451x300)."""


def paste(
    background: Image.Image, obj: Image.Image, scale: float, xy: tuple[int, int], *, mirror: bool = False
) -> tuple[Image.Image, Box]:
    """`obj` rescaled (and mirrored) pasted into a copy of `background` at `xy`; returns the image and its box."""
    w, h = max(1, round(obj.width * scale)), max(1, round(obj.height * scale))
    o = obj.resize((w, h), Image.Resampling.LANCZOS)
    if mirror:
        o = ImageOps.mirror(o)
    out = background.copy()
    out.paste(o, xy)
    x, y = xy
    return out, Box(x, y, min(x + w, out.width), min(y + h, out.height))


@dataclass(frozen=True)
class SampleImage:
    image: Image.Image
    box: Box | None


def sample_concepts() -> dict[str, dict[str, object]]:
    """Per concept: reference views (image, box), context, positives (image, box) and negatives (images)."""
    p = sample_photos()
    cup = p["coffee"].crop((60, 10, 490, 395))
    cat = p["chelsea"].crop((0, 0, 420, 300))
    ml, co, ch = p["motorcycle_left"], p["coffee"], p["chelsea"]
    mirror_box = lambda b, w: Box(w - b.x2, b.y1, w - b.x1, b.y2)  # noqa: E731
    return {
        "motorbike": {
            "context": "my red Yamaha, parked in the garage",
            "references": [
                SampleImage(ml, MOTORBIKE_BOX),
                SampleImage(ImageOps.mirror(ml), mirror_box(MOTORBIKE_BOX, ml.width)),
            ],
            "positives": [SampleImage(p["motorcycle_right"], None)],
            "negatives": [p[n] for n in ("astronaut", "rocket", "camera", "hubble", "coffee", "chelsea")],
        },
        "cup": {
            "context": "my espresso cup with its saucer",
            "references": [SampleImage(co, CUP_BOX), SampleImage(ImageOps.mirror(co), mirror_box(CUP_BOX, co.width))],
            "positives": [
                SampleImage(*paste(p["rocket"], cup, 0.5, (300, 150), mirror=True)),
                SampleImage(*paste(p["astronaut"], cup, 0.4, (300, 300))),
                SampleImage(*paste(p["hubble"], cup, 0.6, (420, 380))),
            ],
            "negatives": [p[n] for n in ("astronaut", "rocket", "camera", "hubble", "ihc", "coins", "chelsea")],
        },
        "cat": {
            "context": "Chelsea, our tabby cat",
            "references": [SampleImage(ch, CAT_BOX), SampleImage(ImageOps.mirror(ch), mirror_box(CAT_BOX, ch.width))],
            "positives": [
                SampleImage(*paste(p["rocket"], cat, 0.45, (50, 200), mirror=True)),
                SampleImage(*paste(p["hubble"], cat, 0.6, (500, 400))),
                SampleImage(*paste(p["coffee"], cat, 0.5, (360, 190))),
            ],
            "negatives": [p[n] for n in ("astronaut", "rocket", "camera", "hubble", "ihc", "coins", "coffee")],
        },
    }


def two_concept_photo() -> tuple[Image.Image, dict[str, Box]]:
    """The astronaut photo with the cat and the cup pasted in: a real background holding two concepts."""
    p = sample_photos()
    cat = p["chelsea"].crop((0, 0, 420, 300))
    cup = p["coffee"].crop((60, 10, 490, 395))
    img, cat_box = paste(p["astronaut"], cat, 0.4, (20, 320))
    img, cup_box = paste(img, cup, 0.35, (330, 20))
    return img, {"cat": cat_box, "cup": cup_box}


def write_sample_concepts(root: str | Path) -> Path:
    """Write the sample set under `root` in the generic concept-folder layout; returns `root`."""
    root = Path(root)
    for name, c in sample_concepts().items():
        d = root / name
        boxes: dict[str, list[float]] = {}
        for sub in ("references", "positives"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            for i, v in enumerate(c[sub]):  # type: ignore[arg-type]
                rel = f"{sub}/{name}_{i}.png"
                v.image.save(d / rel)
                if v.box is not None:
                    boxes[rel] = v.box.as_list()
        (d / "negatives" / "other").mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(c["negatives"]):  # type: ignore[arg-type]
            img.save(d / "negatives" / "other" / f"neg_{i}.png")
        atomic_write_json(d / "boxes.json", boxes)
        atomic_write_text(d / "context.txt", str(c["context"]) + "\n")
    both, _ = two_concept_photo()
    multi_dir = root / "_multi"
    multi_dir.mkdir(parents=True, exist_ok=True)
    both.save(multi_dir / "cat_cup.png")
    photos = sample_photos()
    cup_only, _ = paste(photos["camera"], photos["coffee"].crop((60, 10, 490, 395)), 0.45, (250, 40), mirror=True)
    cup_only.save(multi_dir / "cup_only.png")
    photos["rocket"].save(multi_dir / "neither.png")
    multi = [
        {"image": "_multi/cat_cup.png", "query": ["cat", "cup"], "present": ["cat", "cup"]},
        {"image": "_multi/cup_only.png", "query": ["cat", "cup"], "present": ["cup"]},
        {"image": "_multi/neither.png", "query": ["cat", "cup"], "present": []},
    ]
    atomic_write_text(root / "multi.json", json.dumps(multi, indent=2) + "\n")
    return root


def write_sample_video(
    path: str | Path, *, frames: int = 12, size: tuple[int, int] = (320, 216), fps: float = 6.0
) -> Path:
    """An MP4 of a hand-held-like camera move over the real motorcycle photo (`motorcycle_right`): a slow pan
    and zoom, so the motorbike moves and changes scale across frames. Returns `path`."""
    from focuskit.personalize.video import VideoWriter

    photo = sample_photos()["motorcycle_right"]
    w, h = photo.size
    writer = VideoWriter(path, fps)
    try:
        for i in range(frames):
            t = i / max(1, frames - 1)
            zoom = 1.0 - 0.2 * t
            cw, ch = w * zoom, h * zoom
            x0, y0 = (w - cw) * t, (h - ch) * (0.5 - 0.3 * t)
            writer.write(photo.crop((round(x0), round(y0), round(x0 + cw), round(y0 + ch))).resize(size, Image.LANCZOS))
        return writer.close()
    except BaseException:
        writer.abort()
        raise
