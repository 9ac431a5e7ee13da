"""`PeKitConfig`: every knob of personalization in one dataclass, filled from `configs/pekit.yaml` and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from focuskit.backends.base import GenerationOptions
from focuskit.backends.openai import OpenAIConfig
from focuskit.core.config import load_config
from focuskit.memory.store import EncoderSpec, MemoryConfig, ProposerSpec, default_encoder_spec
from focuskit.personalize.detector import DetectorConfig
from focuskit.personalize.prompting import PromptTemplate
from focuskit.personalize.video import SamplingConfig


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
