"""The `VLMBackend` protocol and the image preparation every backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from focuskit.core.errors import ConfigError, ImageError

MAX_INPUT_PIXELS = 40_000_000
"""Images above 40 megapixels are refused rather than silently shrunk: no VLM reads that detail, and a question
with such an image is almost always a mistake (a panorama, a scan at print resolution)."""


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 is greedy decoding (reproducible answers)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be in [0, 2], got {self.temperature}")


@runtime_checkable
class VLMBackend(Protocol):
    """Generates a text answer to a prompt about images (or the frames of one video)."""

    name: str
    supports_video: bool
    """True when `generate(..., video=True)` feeds the frames to the model as one video; otherwise callers pass a
    few frames as separate images."""

    def generate(
        self,
        images: Sequence[Image.Image],
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        video: bool = False,
    ) -> str: ...


def prepare_images(
    images: Sequence[Image.Image], *, max_side: int, max_pixels: int = MAX_INPUT_PIXELS
) -> list[Image.Image]:
    """RGB copies no larger than `max_side` on their longer side; `ImageError` for images over `max_pixels`."""
    out = []
    for i, img in enumerate(images):
        if img.width * img.height > max_pixels:
            raise ImageError(
                f"image {i + 1} is {img.width}x{img.height} = {img.width * img.height:,} pixels, over the "
                f"{max_pixels:,}-pixel limit for questions; downscale it first"
            )
        rgb = img.convert("RGB")
        scale = max_side / max(rgb.size)
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.LANCZOS)
        out.append(rgb)
    return out
