"""Draw boxes with labels on images, with colors that stay the same for the same name everywhere."""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from focuskit.core.box import Box

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)
COLOR_NAMES: tuple[str, ...] = (
    "red", "green", "blue", "orange", "purple", "cyan", "magenta", "lime", "pink", "teal",
)  # fmt: skip


def palette_color(slot: int) -> tuple[str, tuple[int, int, int]]:
    """The (name, RGB) of palette slot `slot` (wrapping): the one place a concept's stored color slot becomes the
    color the prompt names, the boxes are drawn in and the web page shows, so they cannot disagree."""
    i = int(slot) % len(PALETTE)
    return COLOR_NAMES[i], PALETTE[i]


def hex_color(rgb: Sequence[int]) -> str:
    """'#rrggbb' for an RGB triple (what the web page draws with)."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def color_for(name: str) -> tuple[int, int, int]:
    """A color derived from the name's hash, so it is stable across images, frames and processes."""
    digest = int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16)
    return PALETTE[digest % len(PALETTE)]


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """n visually distinct colors: the palette first, then evenly spaced hues."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    extra = [colorsys.hsv_to_rgb(i / (n - len(PALETTE)), 0.8, 0.95) for i in range(n - len(PALETTE))]
    return list(PALETTE) + [tuple(int(c * 255) for c in rgb) for rgb in extra]  # type: ignore[misc]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Box],
    labels: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    *,
    width: int | None = None,
) -> Image.Image:
    """Return a copy of `image` with each box outlined and labelled."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    lw = width or max(2, round(min(out.size) / 150))
    font = _font(max(12, round(min(out.size) / 30)))
    labels = list(labels) if labels is not None else [""] * len(boxes)
    for i, box in enumerate(boxes):
        color = colors[i] if colors is not None else color_for(labels[i] or str(i))
        draw.rectangle(box.to_xyxy(), outline=color, width=lw)
        if labels[i]:
            tx, ty = box.x1, max(0.0, box.y1 - font.size - 4) if hasattr(font, "size") else box.y1
            bbox = draw.textbbox((tx, ty), labels[i], font=font)
            draw.rectangle(bbox, fill=color)
            draw.text((tx, ty), labels[i], fill=(255, 255, 255), font=font)
    return out


def draw_legend(
    image: Image.Image,
    entries: Sequence[tuple[str, tuple[int, int, int]]],
    *,
    corner: str = "bottom-left",
) -> Image.Image:
    """Return a copy of `image` with a legend box: one color swatch and label per entry, in a corner.

    Used by visual prompting so a reader (or a VLM) can tell which box color is which concept.
    """
    out = image.convert("RGB").copy()
    if not entries:
        return out
    draw = ImageDraw.Draw(out)
    font = _font(max(11, round(min(out.size) / 32)))
    pad = max(3, round(min(out.size) / 120))
    line_h = max(draw.textbbox((0, 0), label, font=font)[3] for label, _ in entries) + pad
    swatch = line_h - pad
    text_w = max(draw.textbbox((0, 0), label, font=font)[2] for label, _ in entries)
    box_w, box_h = swatch + 3 * pad + text_w, len(entries) * line_h + pad
    x0 = pad if corner.endswith("left") else out.width - box_w - pad
    y0 = pad if corner.startswith("top") else out.height - box_h - pad
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=(255, 255, 255), outline=(0, 0, 0))
    for i, (label, color) in enumerate(entries):
        y = y0 + pad + i * line_h
        draw.rectangle((x0 + pad, y, x0 + pad + swatch, y + swatch), fill=color)
        draw.text((x0 + 2 * pad + swatch, y), label, fill=(0, 0, 0), font=font)
    return out
