"""How results leave the server: detections with their concept's color (and mask), images as data URLs, view
sources without server paths, and near misses.

One rule for color, so the page, the drawn PNGs and the VLM prompt agree: a concept's color is its stored palette
slot (`ConceptMemory.color`) through `focuskit.viz.draw.palette_color`; when two concepts of one image share a slot,
visual prompting's `assign_colors` moves the later one, and the server reports exactly that assignment.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.detections import Detections
from focuskit.viz.draw import hex_color, palette_color


def concept_color_json(slot: int) -> dict[str, str]:
    """`{"color": "#rrggbb", "color_name": "red"}` of a concept's stored palette slot."""
    name, rgb = palette_color(slot)
    return {"color": hex_color(rgb), "color_name": name}


def image_colors(memory: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """Per concept name, the color it has in this image: visual prompting's assignment (stored slot, clashes moved)."""
    from focuskit.personalize.prompting import assign_colors

    return {n: {"color": hex_color(c.rgb), "color_name": c.color_name} for n, c in assign_colors(memory, names).items()}


def detections_json(memory: Any, dets: Detections) -> list[dict[str, Any]]:
    """`Detections.to_json()` (concept, box, score, COCO RLE `mask` when masks exist) plus each one's color."""
    colors = image_colors(memory, list(dets.names))
    return [{**d, **colors[d["concept"]]} for d in dets.to_json()]


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    """The image as a `data:` URL. PNG by default: lossless, so the page shows the very pixels a model was given."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def mask_data_url(mask: np.ndarray) -> str:
    """A boolean (H, W) mask as a black-and-white PNG data URL."""
    return data_url(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255))


def view_source(source: str, library_dir: Path | None) -> dict[str, str]:
    """What to show for a view's origin without leaking server paths.

    A view added from a file (the CLI stores the path it was given, absolute or relative to its working folder) is
    shown relative to the library when it lies inside it, else by its file name only; views uploaded or picked
    through the API are stored without a path ("image 2").
    """
    if re.fullmatch(r"image \d+", source):  # `memory.views.source_name` of an in-memory image
        return {"source": "upload", "source_kind": "upload"}
    path = Path(source)
    if path.is_absolute() and library_dir is not None:
        try:
            return {"source": path.resolve().relative_to(library_dir).as_posix(), "source_kind": "library"}
        except (ValueError, OSError):
            pass
    return {"source": path.name, "source_kind": "file"}


def near_misses(
    scores: dict[str, float], found: set[str], tau: float, memory: Any, *, limit: int = 3
) -> list[dict[str, Any]]:
    """Concepts not found whose best score came within reach: "my mug 0.58, below 0.62", best first."""
    rows = [
        (name, score)
        for name, score in scores.items()
        if name not in found and np.isfinite(score) and name in memory and score < tau
    ]
    rows.sort(key=lambda r: -r[1])
    return [
        {"concept": n, "score": round(float(s), 4), "tau": round(float(tau), 4), **concept_color_json(memory.color(n))}
        for n, s in rows[:limit]
    ]
