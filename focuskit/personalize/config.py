"""`PeKitConfig`: every knob of personalization in one dataclass, filled from `configs/pekit.yaml` and CLI flags.

A light module: the configs of the detector, video sampling, prompts, generation and the OpenAI client, none of
which imports torch, FAISS, PyAV or httpx, so the CLI can read and check a config before it loads any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from focuskit.backends.base import GenerationOptions
from focuskit.backends.openai import OpenAIConfig
from focuskit.core.config import load_config
from focuskit.core.errors import ConfigError
from focuskit.matcher.config import DEFAULT_ENCODER_TAG, tau_for
from focuskit.memory.config import EncoderSpec, MemoryConfig, ProposerSpec, default_encoder_spec
from focuskit.personalize.prompting import PromptTemplate

SEGMENTERS = ("grabcut", "box", "sam", "grounded_sam")
"""`focuskit.models.segmenters.list_segmenters()`, spelled out so that checking a config imports no model code
(tests/test_cli_startup.py checks the two agree)."""


@dataclass(frozen=True)
class DetectorConfig:
    tau: float = tau_for(DEFAULT_ENCODER_TAG)
    """Minimum cosine between a proposal and a concept's best view for a detection."""
    nms_iou: float = 0.5
    top_k: int = 64
    """Nearest stored vectors retrieved per proposal; a concept outside them scores -inf for that proposal."""
    max_per_concept: int = 1
    """Boxes kept per concept and image: 1 for personal objects (there is one Bruno), more for e.g. a brand logo."""
    whole_image: bool = True
    """Also score the whole image as a proposal (close-ups, where the object fills the frame); the shared matcher
    always proposes it, so turning this off makes `detect` differ from `localize` and library search."""
    segmenter: str | None = None
    """A `create_segmenter` name (e.g. grabcut): every detection carries its mask; None: boxes only."""
    mask_rerank: bool = False
    """With a segmenter, also re-rank a concept's best candidates by mask against its stored mask embeddings. Off:
    on the real-photo episodes it chose parts of the object (mIoU 0.797 -> 0.717, benchmarks/detect_mask_rerank.py)."""
    rerank_top: int = 8
    """With `mask_rerank`: how many of a concept's best candidates above tau are segmented and re-ranked."""
    refine: bool = True
    """Refine each kept box's edges as `localize` does (`focuskit.matcher.MatcherConfig.refine_top`), so both give
    the same box and score; false: the proposal box, which is what library search answers (docs/lookalikes.md)."""

    def __post_init__(self) -> None:
        if self.segmenter is not None and self.segmenter not in SEGMENTERS:
            raise ConfigError(f"detector.segmenter must be one of {list(SEGMENTERS)} or null, got {self.segmenter!r}")
        if self.rerank_top < 1:
            raise ConfigError(f"detector.rerank_top must be >= 1, got {self.rerank_top}")
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"detector.tau is a cosine threshold in [-1, 1], got {self.tau}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"detector.nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.top_k < 1 or self.max_per_concept < 1:
            raise ConfigError(
                f"detector.top_k and max_per_concept must be >= 1, got {self.top_k} and {self.max_per_concept}"
            )


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames to look at: `every_n`-th frame, or `per_second` frames per second (2 when neither is given)."""

    every_n: int | None = None
    per_second: float | None = None
    max_frames: int = 600
    """Stop after this many sampled frames (a guard against hour-long inputs)."""

    def __post_init__(self) -> None:
        if self.every_n is not None and self.per_second is not None:
            raise ConfigError(
                f"video sampling takes every_n or per_second, not both (got {self.every_n} and {self.per_second})"
            )
        if self.every_n is None and self.per_second is None:
            object.__setattr__(self, "per_second", 2.0)
        if self.every_n is not None and self.every_n < 1:
            raise ConfigError(f"video every_n must be >= 1, got {self.every_n}")
        if self.per_second is not None and self.per_second <= 0:
            raise ConfigError(f"video per_second must be > 0, got {self.per_second}")
        if self.max_frames < 1:
            raise ConfigError(f"video max_frames must be >= 1, got {self.max_frames}")


@dataclass(frozen=True)
class PeKitConfig:
    encoder: EncoderSpec = field(default_factory=default_encoder_spec)
    """Encoder for new memories (an existing memory keeps the one it was built with)."""
    proposer: ProposerSpec = field(default_factory=ProposerSpec)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    video: SamplingConfig = field(default_factory=SamplingConfig)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)


def load_pekit_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PeKitConfig:
    """Defaults, then the YAML file (unknown keys are errors), then `key=value` overrides."""
    return load_config(PeKitConfig, path, overrides)


__all__ = ["SEGMENTERS", "DetectorConfig", "PeKitConfig", "SamplingConfig", "load_pekit_config"]
