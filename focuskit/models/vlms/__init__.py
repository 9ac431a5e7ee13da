"""VLMs for in-context localization: factory, tiny offline model, prompts, episode encoding and answer parsing.

Heavy libraries (torch, transformers, peft) are imported by the submodules that need them; importing this package
only pulls in what its public names require.
"""

from focuskit.models.vlms.encoding import (
    IGNORE_INDEX,
    EncodedEpisode,
    collate_encoded,
    encode_episode,
    episode_answer,
    image_token_runs,
)
from focuskit.models.vlms.factory import LoraSettings, VLMBundle, inspect_checkpoint, load_vlm
from focuskit.models.vlms.families import BoxFormat, Family, family_of_processor, family_spec
from focuskit.models.vlms.generation import (
    VISION_TOKENS,
    GenerationSettings,
    base_model,
    build_generation_config,
    generate,
    stop_token_ids,
    unwrap_model,
    vision_token_ids,
)
from focuskit.models.vlms.parsing import ParsedAnswer, parse_box
from focuskit.models.vlms.prompts import (
    INSTRUCTION_PRESETS,
    NOT_PRESENT,
    PromptConfig,
    answer_text,
    build_prompt,
    episode_messages,
    format_box,
    load_prompt_config,
    save_prompt_config,
)
from focuskit.models.vlms.tiny import TinyVLMConfig, build_tiny_vlm, load_tiny_config

__all__ = [
    "IGNORE_INDEX",
    "INSTRUCTION_PRESETS",
    "NOT_PRESENT",
    "VISION_TOKENS",
    "BoxFormat",
    "EncodedEpisode",
    "Family",
    "GenerationSettings",
    "LoraSettings",
    "ParsedAnswer",
    "PromptConfig",
    "TinyVLMConfig",
    "VLMBundle",
    "answer_text",
    "base_model",
    "build_generation_config",
    "build_prompt",
    "build_tiny_vlm",
    "collate_encoded",
    "encode_episode",
    "episode_answer",
    "episode_messages",
    "family_of_processor",
    "family_spec",
    "format_box",
    "generate",
    "image_token_runs",
    "inspect_checkpoint",
    "load_prompt_config",
    "load_tiny_config",
    "load_vlm",
    "parse_box",
    "save_prompt_config",
    "stop_token_ids",
    "unwrap_model",
    "vision_token_ids",
]
