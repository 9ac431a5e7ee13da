"""Read a VLM's text answer back into a `Box` (pixels of the original image), "not present", or a failure reason.

Models rarely answer in exactly the trained form: Qwen2-VL sometimes drops its box tokens, Qwen2.5-VL wraps JSON in
code fences or truncates it, any model may swap corners or overshoot the image. `parse_box` accepts the common
forms, interprets their numbers in the coordinate space of the family's box format, and never raises: evaluation
and GRPO rewards call it on arbitrary generated text, and a crash there would lose a whole run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from focuskit.core.box import NORM_SCALE, Box
from focuskit.core.errors import FocusError
from focuskit.models.vlms.families import BoxFormat, resolve_box_format

_NUM = r"([-+]?(?:\d{1,15}(?:\.\d{0,12})?|\.\d{1,12}))"
_SEP = r"\s*,\s*"
_NATIVE = re.compile(rf"\(\s*{_NUM}{_SEP}{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}{_SEP}{_NUM}\s*\)")
_JSON = re.compile(rf"[\"']?bbox_2d[\"']?\s*:\s*\[\s*{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}\s*\]")
_LIST = re.compile(rf"[\[(]\s*{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}{_SEP}{_NUM}\s*[\])]")
_ABSENT = re.compile(r"\bnot[\s_-]+present\b|\babsent\b", re.IGNORECASE)

_FORMS = (("native", _NATIVE), ("json", _JSON), ("list", _LIST))


@dataclass(frozen=True)
class ParsedAnswer:
    """The outcome of parsing one answer.

    `ok` is True for a usable answer: a box (`box` set) or a rejection (`absent` True, `box` None). `reason`
    explains a failure, or notes repairs made to a usable box ("corners swapped", "clipped to the image").
    """

    box: Box | None
    absent: bool
    ok: bool
    reason: str = ""
    form: str = ""
    """Which form matched: "native" `(x1,y1),(x2,y2)`, "json" `bbox_2d`, "list" `[x1, y1, x2, y2]`, "absent"."""


def _fail(reason: str) -> ParsedAnswer:
    return ParsedAnswer(box=None, absent=False, ok=False, reason=reason)


def _to_box(
    values: list[float], box_format: BoxFormat, image_size: tuple[int, int], resized: tuple[int, int]
) -> tuple[Box, list[str]]:
    """Values in the format's coordinate space -> a pixel box, with notes on repairs."""
    notes: list[str] = []
    if box_format == "norm1000_tokens":
        limits = (NORM_SCALE, NORM_SCALE)
    elif box_format == "resized_pixels_json":
        limits = (resized[0], resized[1])
    else:
        limits = (1.0, 1.0)
    clipped = [min(max(v, 0.0), float(limits[i % 2])) for i, v in enumerate(values)]
    if clipped != values:
        notes.append("clipped to the image")
    x1, y1, x2, y2 = clipped
    if x1 > x2 or y1 > y2:
        notes.append("corners swapped")
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    if box_format == "norm1000_tokens":
        box = Box.from_norm1000((x1, y1, x2, y2), image_size)
    elif box_format == "resized_pixels_json":
        box = Box.from_resized_pixels((x1, y1, x2, y2), resized, image_size)
    else:
        w, h = image_size
        box = Box(x1 * w, y1 * h, x2 * w, y2 * h)
    return box, notes


def parse_box(
    text: str,
    family: str,
    image_size: tuple[int, int],
    resized_size: tuple[int, int] | None = None,
    *,
    box_format: str = "auto",
) -> ParsedAnswer:
    """Parse a generated answer into a box in pixels of the original `image_size` (width, height).

    Accepted forms, first match wins in this order: Qwen2-VL's `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` (box
    tokens optional), JSON `"bbox_2d": [x1, y1, x2, y2]` (fences, lists and truncation tolerated), and a bare
    `[x1, y1, x2, y2]`. Numbers are read in the coordinate space of the family's box format (0-1000 grid for
    Qwen2-VL, pixels of the `resized_size` input for Qwen2.5-VL, fractions for LLaVA-OneVision). Swapped corners
    are reordered and out-of-range values clipped. With no box, "not present" (or "absent") gives an absent
    answer. Never raises.

    >>> parse_box("<|box_start|>(100,200),(300,400)<|box_end|>", "qwen2_vl", (640, 480)).box
    Box(x1=64.0, y1=96.0, x2=192.0, y2=192.0)
    >>> parse_box("not present", "qwen2_vl", (640, 480)).absent
    True
    """
    if not isinstance(text, str):
        return _fail(f"expected text, got {type(text).__name__}")
    try:
        fmt = resolve_box_format(family, box_format)
    except FocusError as exc:
        return _fail(str(exc))
    try:
        w, h = (float(v) for v in image_size)
        rw, rh = (float(v) for v in (resized_size or image_size))
    except (TypeError, ValueError):
        return _fail(f"image sizes must be (width, height) pairs, got {image_size!r} and {resized_size!r}")
    if not (w > 0 and h > 0 and rw > 0 and rh > 0 and math.isfinite(w * h * rw * rh)):
        return _fail(f"image sizes must be positive, got {image_size!r} and {resized_size!r}")
    for form, pattern in _FORMS:
        match = pattern.search(text)
        if match is None:
            continue
        values = [float(g) for g in match.groups()]
        if not all(math.isfinite(v) for v in values):
            return _fail(f"non-finite coordinate in {match.group(0)!r}")
        try:
            box, notes = _to_box(values, fmt, (w, h), (rw, rh))  # type: ignore[arg-type]
        except FocusError as exc:
            return _fail(f"cannot make a box of {match.group(0)!r}: {exc}")
        if box.width <= 0 or box.height <= 0:
            return ParsedAnswer(None, False, False, f"zero-area box {match.group(0)!r}", form)
        return ParsedAnswer(box=box, absent=False, ok=True, reason="; ".join(notes), form=form)
    if _ABSENT.search(text):
        return ParsedAnswer(box=None, absent=True, ok=True, form="absent")
    snippet = text if len(text) <= 80 else text[:77] + "..."
    return _fail(f"no box found in {snippet!r}")
