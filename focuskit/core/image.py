"""Image loading that every entry point shares.

Phone photos carry their orientation in EXIF, scans come as 16-bit grayscale, screenshots as RGBA: all of them
become upright 8-bit RGB here, once, so boxes drawn by a user on what they *see* match the pixels models get.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from focuskit.core.errors import ImageError

MAX_PIXELS = 100_000_000
"""Refuse images above 100 megapixels: larger files are decompression bombs or scans no model can use."""

ImageInput = str | Path | Image.Image | np.ndarray | bytes


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: rescale to the image's own range instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def load_image(source: ImageInput, *, max_pixels: int = MAX_PIXELS, what: str = "image") -> Image.Image:
    """Return an upright RGB `PIL.Image` from a path, bytes, PIL image or HxW[xC] uint8 array.

    Raises `ImageError` naming the file for a missing, undecodable or oversized image.
    """
    name = str(source) if isinstance(source, (str, Path)) else what
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ImageError(f"{what}: expected an HxW or HxWxC array, got shape {source.shape}")
        arr = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    else:
        if isinstance(source, bytes):
            stream: io.BytesIO | Path = io.BytesIO(source)
        else:
            stream = Path(source)
            if not stream.exists():
                raise ImageError(f"{what} not found: {stream}")
            if not stream.is_file():
                raise ImageError(f"{what} is not a file: {stream}")
        try:
            img = Image.open(stream)
            if img.width * img.height > max_pixels:
                raise ImageError(
                    f"{what} {name} is {img.width}x{img.height} = {img.width * img.height:,} pixels, "
                    f"over the limit of {max_pixels:,}"
                )
            img.load()
        except ImageError:
            raise
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombError,
        ) as exc:
            raise ImageError(f"cannot decode {what} {name}: {exc}") from None
    if img.width * img.height > max_pixels:
        raise ImageError(
            f"{what} {name} is {img.width}x{img.height} = {img.width * img.height:,} pixels, "
            f"over the limit of {max_pixels:,}"
        )
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{what} {name} is empty ({img.width}x{img.height})")
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def image_size(source: ImageInput) -> tuple[int, int]:
    """(width, height) after EXIF orientation, reading only the header for files."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                orientation = img.getexif().get(0x0112, 1)
                w, h = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot decode image {path}: {exc}") from None
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return load_image(source).size


def image_format_for(path: str | Path, *, what: str = "image") -> str:
    """Pillow's format name for an output path's extension; call it before long work so a typo fails early."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {what} {path}: unknown image extension {path.suffix!r} (use .png or .jpg)")
    return fmt


def save_image(image: Image.Image, path: str | Path, *, what: str = "image") -> Path:
    """Write `image` atomically to `path`, its format taken from the extension.

    An unknown extension or an unwritable place is an `ImageError` naming the path, checked before any work is lost.
    """
    from focuskit.core.io import atomic_open

    path = Path(path)
    fmt = image_format_for(path, what=what)
    try:
        with atomic_open(path, "wb") as fh:
            image.save(fh, format=fmt)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot write {what} {path}: {exc}") from None
    return path
