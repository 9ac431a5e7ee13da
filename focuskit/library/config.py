"""`LibraryConfig`: how a photo library is indexed and searched (a light module: no torch, no FAISS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from focuskit.core.errors import ConfigError
from focuskit.matcher.config import DEFAULT_ENCODER_TAG, MatcherConfig, tau_for
from focuskit.search.config import IndexConfig

ID_STRIDE = 4096
"""Vector ids per item (vector id = item id * ID_STRIDE + proposal position): `max_proposals` stays below it."""

DEFAULT_TAU = tau_for(DEFAULT_ENCODER_TAG)
"""The shared matcher's threshold for the memory's default encoder, so a search says "found" where `detect` and
`localize` do. Expect to tune it per library (`--tau`), and per encoder (cosines of DINOv2 features run higher)."""


@dataclass
class LibraryConfig:
    """How a library is indexed and searched. Changing the encoder means re-indexing (embeddings are tagged)."""

    encoder: str = "mobilenetv2"
    """Encoder name for `create_encoder`; must be the one the concept memory embeds its views with."""
    encoder_options: dict[str, Any] = field(default_factory=dict)
    """Options of a built encoder are the memory's (the CLI and server pass its encoder); these apply otherwise."""
    proposers: list[str] = field(default_factory=lambda: list(MatcherConfig().proposers))
    """Proposal sources of the shared matcher (`focuskit.matcher.MatcherConfig`); their boxes are merged."""
    proposer_options: dict[str, dict[str, Any]] = field(default_factory=lambda: MatcherConfig().proposer_options)
    max_proposals: int = 96
    """Boxes kept per photo: the whole photo and an equal share of each proposer's boxes (see `propose`)."""
    batch_size: int = 32
    """Files per committed batch: an interruption loses at most this many files' work."""
    check: Literal["stat", "hash"] = "stat"
    """How a changed file is recognised: size+mtime ('stat'), or also its SHA-1 when the stat changed ('hash',
    which skips files that were only touched or copied back)."""
    video_every_s: float = 2.0
    max_frames_per_video: int = 60
    max_pixels: int = 60_000_000
    tau: float = DEFAULT_TAU
    max_boxes_per_image: int = 1
    """Boxes reported per photo: 1 suits a personal object (there is one Bruno); raise it for repeated objects."""
    nms_iou: float = 0.5
    workers: int = 1
    """Processes computing features while indexing (1: in this process). Each worker holds its own models (~0.5 GB);
    at most 2 batches per worker are in flight, so memory stays bounded whatever the folder's size."""
    index: IndexConfig = field(default_factory=IndexConfig)
    """The vector index over the stored proposals (`focuskit.search`): exact up to `exact_max` vectors (~500
    photos; the exact index holds float32 copies, 190 MB at 50k x 960 dims), compressed past it (64-byte codes) with
    exact re-ranking of the candidates from the shards."""
    candidates: int = 2048
    """Proposals retrieved per concept view in the compressed regime, all re-scored exactly; a photo is found when
    one of its proposals is among them. 2048: on a 100k-photo (5M-vector) library with thousands of near-duplicate
    photos, recall@10 of photos against the float32 exact ranking was 0.425 at 512, 1.000 at 2048 (search p50
    28.7 ms; 8192: 88.7 ms), benchmarks/library_scale.py."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.video_every_s <= 0:
            raise ConfigError(f"video_every_s must be > 0, got {self.video_every_s}")
        if self.max_frames_per_video < 1:
            raise ConfigError(f"max_frames_per_video must be >= 1, got {self.max_frames_per_video}")
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"tau is a cosine similarity in [-1, 1], got {self.tau}")
        if not 1 <= self.max_proposals < ID_STRIDE:
            raise ConfigError(f"max_proposals must be in [1, {ID_STRIDE - 1}], got {self.max_proposals}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.candidates < 1:
            raise ConfigError(f"candidates must be >= 1, got {self.candidates}")
        if not self.proposers:
            raise ConfigError("proposers must name at least one proposal source, e.g. ['ssd', 'windows']")

    def matcher_config(self) -> MatcherConfig:
        """The shared matcher's part of these options."""
        return MatcherConfig(
            encoder=self.encoder,
            encoder_options=dict(self.encoder_options) or MatcherConfig().encoder_options,
            proposers=list(self.proposers),
            proposer_options={k: dict(v) for k, v in self.proposer_options.items()},
            max_proposals=self.max_proposals,
        )
