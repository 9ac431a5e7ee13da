"""Images out of the server: JPEG/PNG responses and thumbnails."""

from __future__ import annotations

import io

from fastapi.responses import Response
from PIL import Image


def image_response(image: Image.Image, fmt: str = "JPEG", *, quality: int = 88, cache: bool = False) -> Response:
    """`image` encoded as JPEG or PNG. `cache` lets the browser keep it (for content addressed by path + mtime)."""
    buf = io.BytesIO()
    rgb = image.convert("RGB")
    if fmt == "JPEG":
        rgb.save(buf, format="JPEG", quality=quality)
    else:
        rgb.save(buf, format="PNG")
    headers = {"Cache-Control": "private, max-age=300" if cache else "no-store"}
    return Response(buf.getvalue(), media_type=f"image/{fmt.lower()}", headers=headers)


def thumbnail(image: Image.Image, side: int) -> Image.Image:
    out = image.copy()
    out.thumbnail((side, side), Image.Resampling.LANCZOS)
    return out
