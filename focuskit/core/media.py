"""Which files are images and which are videos, by extension: the one table every surface uses.

The CLI (`detect`, `personalize`, `concept add`), the photo library (indexing, the server's downloads) and the
dataset loaders (concept folders, QA sets) all sort files with this table, so a file is never a photo on one
surface and a video, or nothing, on another. Light on purpose: the CLI sorts its inputs before any model (or
PyAV / OpenCV) is imported.

`.gif` is an image everywhere, read as its first frame. GIF is a picture format to the people who have them:
photo libraries, browsers and file managers show a GIF as one picture (animated or not), most GIFs in a personal
folder are stills, stickers or short loops rather than footage, and Pillow (`load_image`) reads every GIF while the
video decoders handle their per-frame delays unevenly. Calling it a video would also give a still GIF a one-frame
"video" with frame-addressed URLs in the library. Convert an animated GIF to `.mp4` to have its frames searched or
detected one by one.

`.mpg` / `.mpeg` (MPEG-1/2 program streams, what many older cameras and DVD rips wrote) are videos everywhere;
both PyAV and OpenCV's FFmpeg backend decode them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

MediaKind = Literal["image", "video"]

IMAGE_MEDIA_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".gif": "image/gif",
}
"""Image extension -> the MIME type a file with it is served as (the server's library downloads)."""

IMAGE_SUFFIXES: tuple[str, ...] = tuple(IMAGE_MEDIA_TYPES)
"""Lower-case extensions of the image files taken from folders and patterns (ordered, for error messages)."""

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")
"""Lower-case extensions of the video files (decoded with PyAV by `personalize`, with OpenCV by the library)."""


def media_kind(path: str | Path) -> MediaKind | None:
    """'image' or 'video' by extension (case-insensitive), or None for anything else (sidecars, documents)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_MEDIA_TYPES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def is_image(path: str | Path) -> bool:
    """True for file names with an image extension (`.gif` included: see the module docstring)."""
    return media_kind(path) == "image"


def is_video(path: str | Path) -> bool:
    """True for file names with a video extension (how the CLI tells a video from an image)."""
    return media_kind(path) == "video"


__all__ = ["IMAGE_MEDIA_TYPES", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "MediaKind", "is_image", "is_video", "media_kind"]
