"""`MatchingConfig`: the options of the `matching` engine, in a module that imports no torch (the CLI and the
server read and validate it before any model loads). `focuskit.localizers.matching` re-exports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from focuskit.core.errors import ConfigError
from focuskit.matcher.config import MatcherConfig

SOURCES = ("whole", "ssd", "windows", "similarity", "peaks")
MATCHER_SOURCES = ("ssd", "windows")
"""Sources proposed without the supports (the shared matcher's); 'similarity' and 'peaks' need the supports."""


@dataclass
class MatchingConfig:
    """Options of the matching engine; `configs/matching.yaml` lists them with their defaults."""

    encoder: str = "mobilenetv2"
    """Feature encoder name (see `focuskit.models.encoders.list_encoders()`)."""
    encoder_options: dict[str, Any] = field(default_factory=lambda: dict(MatcherConfig().encoder_options))
    """Extra keyword arguments for the encoder, e.g. {layer: s16} or {model: /path/to/dinov2} for hub encoders. The
    default is the concept memory's and the library's, so the three surfaces agree."""
    input_size: int = 448
    """Longer image side fed to the encoder, in pixels. Larger finds smaller objects and costs quadratically more."""
    tau: float | None = None
    """Absent threshold on the best candidate's score; below it the answer is "not present". None: the value
    measured for the encoder on the built-in real photos (`DEFAULT_TAU`), since cosine scales differ by network."""
    proposals: list[str] = field(default_factory=lambda: ["ssd", "windows"])
    """Candidate sources, any of: ssd, windows (the shared matcher's, with the whole image), similarity, peaks."""
    fallback_proposals: list[str] = field(default_factory=lambda: ["similarity", "peaks"])
    """Sources tried only when the best candidate of `proposals` scores below `fallback_below`."""
    fallback_below: float | None = None
    """Score under which `fallback_proposals` are added (None: tau)."""
    ssd_threshold: float = 0.02
    """SSD score threshold; low on purpose, since the detector's class and confidence are not what is matched."""
    ssd_max_proposals: int = 100
    max_proposals: int = 96
    """Boxes kept from the matcher's sources (the whole image and an equal share of each)."""
    whole_image: bool = True
    """Propose the whole image too (as `detect` and the library do)."""
    hflip: bool = False
    """Also embed each support mirrored (the concept memory does what its `augment` says; the defaults agree)."""
    zoom_out: list[float] = field(default_factory=lambda: [2.5])
    """Also embed each support zoomed out by these factors (as the concept memory does)."""
    peaks: int = 3
    """Local maxima of the similarity map used by the 'similarity' and 'peaks' sources."""
    grow_levels: list[float] = field(default_factory=lambda: [0.5, 0.65, 0.8])
    """Relative levels between the map's median (0) and a peak (1) at which regions are grown."""
    peak_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.4, 2.0])
    """Sizes around peaks, relative to a support box's size as a fraction of its image."""
    peak_aspect_ratios: list[float] = field(default_factory=lambda: [0.6, 1.0, 1.6])
    layout_weight: float = 0.0
    """Weight of the 3x3 layout similarity in the score (0 = the shared matcher's score; above 0 `localize` no
    longer agrees with `detect` and library search)."""
    layout_grid: int = 3
    refine_top: int = field(default_factory=lambda: MatcherConfig().refine_top)
    """The best distinct candidates whose edges are refined when the object is found (0: off); the shared
    matcher's default (`MatcherConfig.refine_top`, `focuskit.matcher.refine`)."""
    refine_steps: list[float] = field(default_factory=lambda: list(MatcherConfig().refine_steps))
    refine_accept: float = MatcherConfig.refine_accept
    rotate: list[int] = field(default_factory=list)
    """Support variants rotated by these angles (`MatcherConfig.rotate`)."""
    min_box_size: float = 4.0
    """Candidates narrower or shorter than this many pixels are dropped."""
    max_instances: int = 1
    """Above 1, further non-overlapping candidates above tau are returned as `Prediction.extra_boxes` (their
    scores in `meta["extra_scores"]`), after NMS among the candidates above tau at `instance_iou`."""
    instance_iou: float = 0.3
    """IoU above which two candidates count as the same instance (per-instance NMS, which also drops a candidate
    lying mostly inside a kept one or covering one: `focuskit.core.detections.instance_nms`)."""
    cache_size: int = 256
    """Support embeddings kept in memory (least recently used are dropped)."""
    crop_small_cells: float = MatcherConfig.crop_small_cells
    """Re-embed small supports and the best small candidates from crops (`MatcherConfig.crop_small_cells`)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.proposals) - set(SOURCES))
        if unknown or not self.proposals:
            raise ConfigError(f"matching proposals must be a non-empty list of {list(SOURCES)}, got {self.proposals}")
        unknown = sorted(set(self.fallback_proposals) - set(SOURCES))
        if unknown:
            raise ConfigError(f"matching fallback_proposals must be a list of {list(SOURCES)}, got {unknown}")
        if self.input_size < 32:
            raise ConfigError(f"matching input_size must be >= 32 pixels, got {self.input_size}")
        if self.tau is not None and not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"matching tau must be in [-1, 1] (a cosine similarity), got {self.tau}")
        if not 0.0 <= self.layout_weight <= 1.0:
            raise ConfigError(f"matching layout_weight must be in [0, 1], got {self.layout_weight}")
        if self.layout_grid < 1:
            raise ConfigError(f"matching layout_grid must be >= 1, got {self.layout_grid}")
        if self.peaks < 1:
            raise ConfigError(f"matching peaks must be >= 1, got {self.peaks}")
        if any(not 0.0 <= t < 1.0 for t in self.grow_levels) or not self.grow_levels:
            raise ConfigError(f"matching grow_levels must be numbers in [0, 1), got {self.grow_levels}")
        if any(s <= 0 for s in self.peak_scales) or any(a <= 0 for a in self.peak_aspect_ratios):
            raise ConfigError("matching peak_scales and peak_aspect_ratios must be positive numbers")
        if self.max_instances < 1:
            raise ConfigError(f"matching max_instances must be >= 1, got {self.max_instances}")
        if not 0.0 < self.instance_iou <= 1.0:
            raise ConfigError(f"matching instance_iou must be in (0, 1], got {self.instance_iou}")
        if self.refine_top < 0 or any(not 0.0 < st < 1.0 for st in self.refine_steps):
            raise ConfigError("matching refine_top must be >= 0 and refine_steps fractions in (0, 1)")
        if self.cache_size < 0:
            raise ConfigError(f"matching cache_size must be >= 0, got {self.cache_size}")
