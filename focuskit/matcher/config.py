"""`MatcherConfig`: what the region matcher uses (encoder, proposal sources, view augmentation, thresholds).

Imports no torch, so the CLI, the server settings and the library/memory configs can read and validate it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from focuskit.core.errors import ConfigError

DEFAULT_ENCODER_TAG = "mobilenetv2+parts3w0.3"
"""The tag of the default encoder (MobileNetV2 stride 16, whole box + 3x3 layout grid; see `MatcherConfig`)."""

DEFAULT_TAU: dict[str, float] = {
    DEFAULT_ENCODER_TAG: 0.56,
    "mobilenetv2-s16+s32": 0.62,
    "mobilenetv2": 0.5,
    "efficientnet_lite0": 0.67,
}
"""Absent threshold per encoder tag, on the best region's cosine with any support view.

`mobilenetv2+parts3w0.3` (the default), measured with the default options: on the 31 built-in real-photo episodes
absent queries scored <= 0.471 and present ones >= 0.592 (k = 1, 2, 4); on the concept sample set every recognition
metric was 100 % for tau in 0.54-0.61. 0.56 sits in both gaps (docs/localize.md, "One matcher for every surface").
`mobilenetv2-s16+s32` (0.62, the concept memory's former default), `mobilenetv2` (s16) and `efficientnet_lite0` are
the figures measured for those encoders before. Tags not listed (dinov2, clip, random
weights) fall back to `FALLBACK_TAU`: set `tau` for them."""

FALLBACK_TAU = 0.5

PROPOSAL_SOURCES = ("ssd", "windows")


def tau_for(tag: str) -> float:
    """The measured absent threshold of an encoder tag (`FALLBACK_TAU` for tags never measured)."""
    return DEFAULT_TAU.get(tag, FALLBACK_TAU)


ROTATIONS: tuple[int, ...] = (90, 180, 270)
"""The support-view rotations a matcher (and the concept memory's `augment.rotate`) can add: exact, no resampling."""


@dataclass
class MatcherConfig:
    """The one default configuration shared by `localize`, `detect` and library search."""

    encoder: str = "mobilenetv2"
    """`create_encoder` name; with `encoder_options` it must be the concept memory's encoder (embeddings are tagged)."""
    encoder_options: dict[str, Any] = field(default_factory=lambda: {"layer": "s16", "parts": 3})
    """Stride-16 features (parts and texture) with the whole box plus a 3x3 layout grid in one 960-dim vector
    (`focuskit.models.encoders.parts`): on the real-photo episodes this kept the localizer's mIoU where the
    whole-box s16+s32 embedding lost 0.03-0.08, and it separates the concept sample set (docs/localize.md)."""
    proposers: list[str] = field(default_factory=lambda: ["ssd", "windows"])
    """Class-agnostic proposal sources whose boxes are merged (plus the whole image, always first)."""
    proposer_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"windows": {"sizes": [0.3, 0.5, 0.75], "aspect_ratios": [0.5, 1.0, 2.0]}}
    )
    whole_image: bool = True
    """Propose the whole image too (close-ups, where the object fills the frame)."""
    max_proposals: int = 96
    """Boxes kept per image: the whole image and an equal share of each proposer's boxes."""
    hflip: bool = False
    """Also embed each support view mirrored. Off by default: on the real-photo episodes mirrored views let a wrong
    box win one 1-shot episode (mIoU 0.851 -> 0.834) and changed nothing else."""
    zoom_out: list[float] = field(default_factory=lambda: [2.5])
    """Also embed each support view placed in a canvas this many times larger (CNN features are not scale invariant)."""
    refine_top: int = 1
    """When the object is found, refine the edges of this many best distinct candidates and answer the best refined
    box (`focuskit.matcher.refine`; 0: off). Needs the query's feature map, so `localize` and `detect` (CLI, API,
    HTTP) do it; library search answers the stored proposal box. 1 (the winner only): refining the top 3 let a loose
    candidate, once refined, outscore a tight winner and lowered the real-photo mIoU (0.851/0.893/0.899 ->
    0.829/0.888/0.886 at k=1/2/4); refining the winner raised it (docs/lookalikes.md)."""
    refine_steps: list[float] = field(default_factory=lambda: [0.16, 0.08, 0.04])
    """Edge moves tried by the refinement, as fractions of the box's width and height, coarse to fine."""
    refine_accept: float = 0.04
    """Score gain a refined box needs to replace its proposal: on the same-category tuning split gains >= 0.042 were
    loose boxes tightened and gains <= 0.022 the search fitting the coarse grid of small objects."""
    rotate: list[int] = field(default_factory=list)
    """Also embed each support view rotated by these angles (90, 180, 270 degrees): in-plane rotation, for objects
    seen from above. Off by default: it lifts rotated coins a lot but costs three encodes per support image, the
    concept memory does not store such views, and the real-photo mIoU at k=4 fell slightly (docs/lookalikes.md)."""
    tau: float | None = None
    """Absent threshold; None: the measured value for the encoder's tag (`DEFAULT_TAU`)."""
    crop_small_cells: float = 0.0
    """Regions covering fewer than this many feature cells are re-embedded from a crop resized to the encoder's
    working size: a support view once (a `crop` variant), a query's best 8 candidates after the ordinary scoring,
    then re-scored (`focuskit.models.regions`). 0 = off (docs/masks.md has the measurement)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.proposers) - set(PROPOSAL_SOURCES))
        if unknown or not self.proposers:
            raise ConfigError(
                f"matcher proposers must be a non-empty list of {list(PROPOSAL_SOURCES)}, got {self.proposers}"
            )
        if self.max_proposals < 1:
            raise ConfigError(f"matcher max_proposals must be >= 1, got {self.max_proposals}")
        bad = [f for f in self.zoom_out if not 1.0 < f <= 8.0]
        if bad:
            raise ConfigError(f"matcher zoom_out factors must be in (1, 8], got {bad}")
        if any(a not in ROTATIONS for a in self.rotate):
            raise ConfigError(f"matcher rotate angles must be 90, 180 or 270, got {self.rotate}")
        if self.refine_top < 0 or any(not 0.0 < s < 1.0 for s in self.refine_steps):
            raise ConfigError(f"matcher refine_top must be >= 0 and refine_steps in (0, 1), got {self.refine_top}")
        if self.crop_small_cells < 0:
            raise ConfigError(f"matcher crop_small_cells must be >= 0 (0 = off), got {self.crop_small_cells}")
        if self.tau is not None and not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"matcher tau must be in [-1, 1] (a cosine similarity), got {self.tau}")
