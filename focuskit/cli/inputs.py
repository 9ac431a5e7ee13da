"""Command-line inputs: files, folders and glob patterns expanded to a sorted list of media files.

A shell expands `photos/*.jpg` itself, but a quoted pattern (or a shell that does not glob, or a pattern with
`**`) reaches us as text, so patterns are expanded here too. A folder means the images directly inside it (or,
with `recursive`, below it). Everything is checked before a model is loaded: a path that does not exist, a folder
without images or a pattern that matches nothing is a one-line error, not a traceback after 5 s of loading.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from focuskit.core.errors import ConfigError
from focuskit.core.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image, is_video

_GLOB_CHARS = set("*?[")


def _folder_media(folder: Path, *, recursive: bool, videos: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and (is_image(p) or (videos and is_video(p))))


def expand_inputs(
    items: Sequence[str | Path],
    *,
    what: str = "input",
    recursive: bool = False,
    videos: bool = True,
    dedupe: bool = True,
) -> list[Path]:
    """Files as given, folders as the media files in them, patterns as their matches (sorted); with `dedupe`,
    a file reached twice (a folder and a pattern) is kept once. `concept add` keeps repeats: the same photo may be
    given twice with two boxes.

    Raises `ConfigError` naming the first item that is missing, an empty folder, or a pattern matching no media.
    """
    if not items:
        raise ConfigError(f"no {what} given: pass image files, folders or glob patterns")
    out: list[Path] = []
    kinds = "images or videos" if videos else "images"
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _folder_media(path, recursive=recursive, videos=videos)
            if not found:
                suffixes = ", ".join((*IMAGE_SUFFIXES, *(VIDEO_SUFFIXES if videos else ())))
                raise ConfigError(f"{what} folder {path} has no {kinds} ({suffixes})")
            out.extend(found)
        elif path.is_file():
            if not videos and is_video(path):
                raise ConfigError(f"{what} {path} is a video: give images")
            out.append(path)
        elif _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            found = [m for m in matches if m.is_file() and (is_image(m) or (videos and is_video(m)))]
            if not found:
                raise ConfigError(f"{what} pattern {text!r} matches no {kinds}")
            out.extend(found)
        else:
            raise ConfigError(f"{what} not found: {path}")
    return list(dict.fromkeys(out)) if dedupe else out


def single_video(paths: list[Path]) -> Path | None:
    """The video when the inputs are exactly one video; a video among several inputs is refused."""
    videos = [p for p in paths if is_video(p)]
    if not videos:
        return None
    if len(paths) > 1:
        raise ConfigError(
            f"videos are processed one at a time: got {len(videos)} video(s) among {len(paths)} inputs "
            f"(first: {videos[0]})"
        )
    return videos[0]


__all__ = ["expand_inputs", "single_video"]
