"""The built-in demo library: real photos that install offline, copied into the user's cache directory.

Sources: the hand-checked real-photo set shipped in `focuskit/assets/realphotos/` (frames of hand-held box and cup
videos, a chessboard, a motorcycle stereo pair, street bikes, scikit-image photos), a few more scikit-image photos,
and one short video assembled from the box frames so video indexing shows up too. Nothing is downloaded.

The demo memory is seeded with one concept, "my box", taught from a single boxed photo, so a first search shows
results before the user has taught anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.cache import cache_dir
from focuskit.core.io import atomic_open
from focuskit.data.realphotos import realphotos_dir

ASSET_DIR = realphotos_dir()
SKIMAGE_PHOTOS = ("chelsea.png", "rocket.jpg", "hubble_deep_field.jpg")
VIDEO_FRAMES = ("box_f0000.jpg", "box_f0045.jpg", "box_f0100.jpg", "box_f0130.jpg", "box_f0190.jpg", "box_f0230.jpg")
SEED_CONCEPT = ("my box", "box_f0000.jpg", Box(296.0, 14.0, 597.0, 242.0), "the printed cardboard box on my desk")
"""Name, photo, box (checked by eye: it is the episode file's support box) and context of the seeded concept."""


def _copy(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    with src.open("rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def _write_video(frames: list[Path], dest: Path, fps: float = 1.0) -> None:
    """An MP4 (mp4v) of `frames` at `fps`, written beside `dest` and renamed into place."""
    if dest.exists():
        return
    images = [np.asarray(Image.open(f).convert("RGB")) for f in frames]
    height, width = images[0].shape[:2]
    tmp = dest.with_name(f".{dest.name}.tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for img in images:
            writer.write(cv2.cvtColor(cv2.resize(img, (width, height)), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, dest)


def build_demo_library(dest: Path | None = None, *, with_video: bool = True) -> Path:
    """Fill `dest` (default `cache_dir()/demo/library`) with the demo photos; idempotent. Returns the folder."""
    folder = dest if dest is not None else cache_dir() / "demo" / "library"
    folder.mkdir(parents=True, exist_ok=True)
    if ASSET_DIR.is_dir():
        for src in sorted(ASSET_DIR.glob("*.jpg")):
            _copy(src, folder / src.name)
    try:
        import skimage

        data = Path(skimage.__file__).resolve().parent / "data"
        for name in SKIMAGE_PHOTOS:
            if (data / name).is_file():
                _copy(data / name, folder / name)
    except ImportError:
        pass
    if with_video and all((ASSET_DIR / f).is_file() for f in VIDEO_FRAMES):
        (folder / "videos").mkdir(exist_ok=True)
        _write_video([ASSET_DIR / f for f in VIDEO_FRAMES], folder / "videos" / "box_clip.mp4")
    return folder


def seed_demo_memory(memory: object) -> bool:
    """Teach the seed concept to an empty memory (a `ConceptMemory`); False if the memory already has concepts."""
    name, photo, box, context = SEED_CONCEPT
    if len(memory) > 0 or not (ASSET_DIR / photo).is_file():  # type: ignore[arg-type]
        return False
    memory.add(name, [ASSET_DIR / photo], boxes=[box], context=context)  # type: ignore[attr-defined]
    return True
