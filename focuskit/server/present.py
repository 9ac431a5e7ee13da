"""How results leave the server: detections with their concept's color (and mask), images as data URLs, view
sources without server paths, and near misses.

One rule for color, so the page, the drawn PNGs and the VLM prompt agree: a concept's color is its stored palette
slot (`ConceptMemory.color`) through `focuskit.viz.draw.palette_color`; when two concepts of one image share a slot,
visual prompting's `assign_colors` moves the later one, and the server reports exactly that assignment.
"""

from __future__ import annotations

import base64
import io
from typing import Any

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


def view_source(source: str) -> dict[str, str]:
    """A view's origin as shown: the memory stores a file name (the CLI's views), a library-relative path (views
    picked from the library here) or "upload", never a server path (older memories' absolute paths are shown by
    their file name by the memory itself). `source_kind` tells uploads from files."""
    return {"source": source, "source_kind": "upload" if source == "upload" else "file"}


def near_misses_json(dets: Detections, tau: float, memory: Any, *, limit: int = 3) -> list[dict[str, Any]]:
    """The concepts not found whose best score came closest to `tau` ("my mug 0.58, below 0.62"), best first."""
    return [
        {"concept": n, "score": round(s, 4), "tau": round(float(tau), 4), **concept_color_json(memory.color(n))}
        for n, s in dets.near_misses(tau)[:limit]
        if n in memory
    ]
