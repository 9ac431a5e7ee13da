"""Finding the photos and videos under a folder, and reading the frames of a video that the index samples.

A personal library is a folder tree of camera files: photos, a few videos, and clutter (thumbnails caches, sidecar
files, hidden folders). Only files whose extension names an image or video format in `focuskit.core.media` (the
table the CLI uses too) are taken; hidden entries are skipped; symlinks are followed only when they stay inside the
folder, so indexing (and the server that later serves the indexed files) never reaches outside the folder the user
named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from focuskit.core.errors import ImageError
from focuskit.core.media import MediaKind, media_kind


@dataclass(frozen=True)
class MediaFile:
    """One file found under a library root: its path relative to the root (POSIX separators) and its stat."""

    path: str
    kind: MediaKind
    size: int
    mtime_ns: int


def is_inside(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink resolved, lies inside the already-resolved `root`."""
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # broken link, permission denied, symlink loop
        return False


def scan_media(root: Path, *, exclude: Sequence[Path] = ()) -> list[MediaFile]:
    """Every image and video under `root` (resolved), sorted by path; `exclude` are folders to skip (index state,
    concept memory: their thumbnails are not the user's photos).

    Hidden files and folders (name starting with '.') are skipped, and so are symlinks that resolve outside `root`.
    Symlinked folders are not descended into, which also rules out loops.
    """
    root = root.resolve()
    skip = {p.resolve() for p in exclude}
    found: list[MediaFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d not in skip)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            kind = media_kind(name)
            if kind is None:
                continue
            full = here / name
            if full.is_symlink() and not is_inside(full, root):
                continue
            try:
                st = full.stat()
            except OSError:  # vanished between listing and stat, or a broken link
                continue
            found.append(MediaFile(full.relative_to(root).as_posix(), kind, st.st_size, st.st_mtime_ns))
    return found


@dataclass(frozen=True)
class VideoFrame:
    index: int
    time_s: float
    image: Image.Image


def _open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise ImageError(f"cannot open video {path}: not a video OpenCV can decode")
    return cap


def _to_pil(frame_bgr: np.ndarray) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))


def sample_frames(path: Path, *, every_s: float, max_frames: int) -> Iterator[VideoFrame]:
    """Frames every `every_s` seconds, at most `max_frames`, spread over the whole video when it is longer.

    Frames are read sequentially (grab skips decoding the ones not kept), which is exact for every codec, unlike
    seeking. Raises `ImageError` when the file cannot be opened or yields no frame at all.
    """
    cap = _open_video(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, round(fps * every_s))
        if count > 0 and count / step > max_frames:
            step = int(np.ceil(count / max_frames))
        emitted = 0
        index = 0
        while emitted < max_frames:
            if not cap.grab():
                break
            if index % step == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    emitted += 1
                    yield VideoFrame(index, index / fps, _to_pil(frame))
            index += 1
        if emitted == 0:
            raise ImageError(f"video {path} has no decodable frame")
    finally:
        cap.release()


def read_frame(path: Path, index: int) -> Image.Image:
    """Frame number `index` of a video, decoded by reading forward from the start (exact, like `sample_frames`)."""
    if index < 0:
        raise ImageError(f"frame index must be >= 0, got {index}")
    cap = _open_video(path)
    try:
        for _ in range(index):
            if not cap.grab():
                raise ImageError(f"video {path} has no frame {index}")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ImageError(f"video {path} has no frame {index}")
        return _to_pil(frame)
    finally:
        cap.release()
