"""Configuration of a concept memory: which encoder and proposer, view storage, augmentation, index.

A light module (no torch, no FAISS): specs name what to build, and build it only when `create` is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from focuskit.core.errors import ConfigError
from focuskit.matcher.config import ROTATIONS, MatcherConfig
from focuskit.search.config import IndexConfig

if TYPE_CHECKING:
    from focuskit.models.encoders import Encoder
    from focuskit.models.proposals import Proposer


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder: a `create_encoder` name and its options. Stored in the memory to rebuild it."""

    name: str = "mobilenetv2"
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Encoder:
        from focuskit.models.encoders import create_encoder

        return create_encoder(self.name, **self.options)


DEFAULT_ENCODER_NAME = "mobilenetv2"
DEFAULT_ENCODER_OPTIONS: dict[str, Any] = dict(MatcherConfig().encoder_options)
"""The shared region matcher's default (`focuskit.matcher.MatcherConfig`), so `detect`, `localize` and library
search embed alike: MobileNetV2 stride 16 with the whole box + 3x3 layout grid in one vector. (The former s16+s32
whole-box default separated the sample set too, but lost 0.03-0.08 mIoU as the localizer's embedding.)"""


def default_encoder_spec() -> EncoderSpec:
    return EncoderSpec(DEFAULT_ENCODER_NAME, dict(DEFAULT_ENCODER_OPTIONS))


@dataclass(frozen=True)
class ProposerSpec:
    """A `create_proposer` name and its options (the proposal source of auto-boxing and detection)."""

    name: str = "ssd"
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Proposer:
        from focuskit.models.proposals import create_proposer

        return create_proposer(self.name, **self.options)


@dataclass(frozen=True)
class AugmentConfig:
    """Extra embeddings stored per view, so a query that shows the object mirrored or smaller still matches.

    A close-up reference fills the encoder's input while the same object in a new photo may cover a fifth of it;
    CNN features are not scale invariant, so each view is also embedded "zoomed out" (placed, by reflection
    padding, in a canvas `f` times larger). On the scikit-image photos, with MobileNetV2 stride-16 features, this
    raised the small pasted cat's best cosine from 0.44-0.56 to 0.64-0.80 without raising negatives (with the
    default s16+s32 features the gain is small).
    """

    hflip: bool = MatcherConfig.hflip
    """Default: the shared matcher's (off; see `focuskit.matcher.MatcherConfig.hflip`)."""
    zoom_out: list[float] = field(default_factory=lambda: list(MatcherConfig().zoom_out))
    crop_small_cells: float = MatcherConfig.crop_small_cells
    """Views covering fewer than this many feature cells also get a `crop` variant (re-embedded from a crop; 0 =
    off). Default: the shared matcher's (`focuskit.matcher.MatcherConfig.crop_small_cells`)."""
    rotate: list[int] = field(default_factory=list)
    """Also store each view rotated by these angles (90, 180, 270), for objects seen from above (coins, documents):
    the same variants `MatcherConfig.rotate` gives `localize`. Off by default, as there (three encodes per view)."""

    def __post_init__(self) -> None:
        if any(a not in ROTATIONS for a in self.rotate):
            raise ConfigError(f"augment.rotate angles must be 90, 180 or 270, got {self.rotate}")
        bad = [f for f in self.zoom_out if not 1.0 < f <= 8.0]
        if bad:
            raise ConfigError(f"augment.zoom_out factors must be in (1, 8], got {bad}")
        if self.crop_small_cells < 0:
            raise ConfigError(f"augment.crop_small_cells must be >= 0 (0 = off), got {self.crop_small_cells}")

    def matcher_config(self) -> MatcherConfig:
        """The shared matcher's settings that make exactly these stored variants (`memory.views`)."""
        return MatcherConfig(hflip=self.hflip, zoom_out=list(self.zoom_out), crop_small_cells=self.crop_small_cells,
                             rotate=list(self.rotate))  # fmt: skip


@dataclass(frozen=True)
class MemoryConfig:
    view_max_side: int = 1024
    """Stored view images are downscaled so their longer side is at most this (re-embedding reads them)."""
    thumbnail_side: int = 160
    jpeg_quality: int = 92
    lock_timeout: float = 120.0
    """Seconds a writer waits for another writer before giving up with an error."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    autobox: str = "refined"
    """How views added without a box are boxed (`memory.autobox.METHODS`): "refined", or "refined-hands" for
    objects photographed in a hand (it also avoids skin, so never for people), or "saliency" (the first method)."""

    def __post_init__(self) -> None:
        if self.view_max_side < 32 or self.thumbnail_side < 16:
            raise ConfigError(
                f"view_max_side must be >= 32 and thumbnail_side >= 16, got {self.view_max_side}, {self.thumbnail_side}"
            )
        if self.autobox not in ("saliency", "refined", "refined-hands"):
            raise ConfigError(f"autobox must be 'refined', 'refined-hands' or 'saliency', got {self.autobox!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


__all__ = [
    "DEFAULT_ENCODER_NAME",
    "DEFAULT_ENCODER_OPTIONS",
    "AugmentConfig",
    "EncoderSpec",
    "MemoryConfig",
    "ProposerSpec",
    "default_encoder_spec",
]
