"""A tiny Qwen2-VL (or Qwen2.5-VL, LLaVA-OneVision) built from a config, with a locally made tokenizer: no download.

Tests, benchmarks and the CPU reproduction all need a VLM, and no VLM weights install offline. So this module makes
a real `Qwen2VLForConditionalGeneration` with random weights and a real `Qwen2VLProcessor` (image processor, video
processor, tokenizer, chat template): inputs go through the processor exactly as for a downloaded checkpoint, and
the result saves and loads with `save_pretrained`/`from_pretrained` like one. Only the sizes are small.

The tokenizer is a byte-level BPE (the Qwen2 pre-tokenizer, so digits stay single tokens) whose merges are learned
from the prompt vocabulary, plus the Qwen2-VL special tokens and chat template. The LLaVA-OneVision variant (its
language model is Qwen2 too) adds `<image>`/`<video>` and uses a SigLIP vision tower and LLaVA-OV's chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from focuskit.core.config import load_config
from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import VLMBundle
from focuskit.models.vlms.prompts import ABSENT_INSTRUCTION, FOCUSKIT_INSTRUCTION, NOT_PRESENT, PromptConfig

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
"""Qwen2-VL's added special tokens, in its order; `<|endoftext|>` (pad/unk) comes first as id 0."""

QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL-Instruct's chat template (the public one), so prompts render exactly as for the real checkpoints."""

LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""llava-hf LLaVA-OneVision's chat template: all images first, then the text items (see `families.py`)."""

LLAVA_SPECIAL_TOKENS = ["<image>", "<video>"]

_TOKENIZER_CORPUS = (
    FOCUSKIT_INSTRUCTION,
    ABSENT_INSTRUCTION,
    NOT_PRESENT,
    "system You are a helpful assistant. user assistant",
    '{"bbox_2d": [0, 0, 0, 0]}, "label": "object"',
)
"""Text whose words become whole tokens, so prompts stay short; anything else still encodes byte by byte."""


@dataclass
class TinyVLMConfig:
    """Sizes of the tiny model. Defaults: ~0.2 M parameters, a 112x112 image is 16 visual tokens.

    For LLaVA-OneVision the vision tower sees `patch_size * merge_size` square tiles (28 px: 4 patches, 5 tokens per
    image in multi-image prompts, which is what episodes always are); min/max_pixels apply to the Qwen families.
    """

    family: Literal["qwen2_vl", "qwen2_5_vl", "llava_onevision"] = "qwen2_vl"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 32
    vision_heads: int = 2
    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    tokenizer_vocab_size: int = 512
    """Target size of the learned BPE (bytes + merges); special tokens come on top."""
    max_position_embeddings: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(f"head size hidden_size/num_heads must be even, got {self.hidden_size // self.num_heads}")
        if self.vision_embed_dim % self.vision_heads:
            raise ConfigError(
                f"vision_embed_dim ({self.vision_embed_dim}) must be a multiple of vision_heads ({self.vision_heads})"
            )
        if self.max_pixels < self.min_pixels:
            raise ConfigError(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")
        for name in ("num_layers", "vision_depth", "patch_size", "merge_size", "tokenizer_vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(instruction="focuskit", min_pixels=self.min_pixels, max_pixels=self.max_pixels)


def load_tiny_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TinyVLMConfig:
    """A `TinyVLMConfig` from YAML (e.g. `configs/vlm_tiny.yaml`) and `key=value` overrides; defaults otherwise."""
    return load_config(TinyVLMConfig, path, overrides)


def build_tiny_tokenizer(vocab_size: int = 512, extra_tokens: list[str] | None = None) -> Any:
    """A Qwen2 tokenizer (byte-level BPE, Qwen2 pre-tokenizer) with merges learned from the prompt vocabulary."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    bpe.train_from_iterator(list(_TOKENIZER_CORPUS) * 4, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        extra_special_tokens=SPECIAL_TOKENS + list(extra_tokens or []),
        model_max_length=32768,
    )
    # As in the real Qwen2-VL instruct tokenizers: turns end with <|im_end|>, padding is <|endoftext|>. Without it the
    # HF Trainer "aligns" the model's eos to the pad token when it saves a checkpoint.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_processor(config: TinyVLMConfig) -> Any:
    """A real Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision processor around the tiny tokenizer."""
    if config.family == "llava_onevision":
        return _build_llava_processor(config)
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    common = {
        "min_pixels": config.min_pixels,
        "max_pixels": config.max_pixels,
        "patch_size": config.patch_size,
        "merge_size": config.merge_size,
    }
    image_processor = Qwen2VLImageProcessor(**common)
    video_processor = Qwen2VLVideoProcessor(**common)
    tokenizer = build_tiny_tokenizer(config.tokenizer_vocab_size)
    if config.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor

        cls: Any = Qwen2_5_VLProcessor
    else:
        cls = Qwen2VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def _llava_tile(config: TinyVLMConfig) -> int:
    return config.patch_size * config.merge_size


def _build_llava_processor(config: TinyVLMConfig) -> Any:
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tile = _llava_tile(config)
    size = {"height": tile, "width": tile}
    pinpoints = [[tile * a, tile * b] for a in (1, 2) for b in (1, 2)]
    tokenizer = build_tiny_tokenizer(config.tokenizer_vocab_size, LLAVA_SPECIAL_TOKENS)
    tokenizer.chat_template = LLAVA_ONEVISION_CHAT_TEMPLATE
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=config.merge_size**2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in Qwen2-VL's 16:24:24 proportion."""
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _model_config(config: TinyVLMConfig, tokenizer: Any) -> Any:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", *SPECIAL_TOKENS)}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": _mrope_section(config.hidden_size // config.num_heads),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_common = {
        "depth": config.vision_depth,
        "num_heads": config.vision_heads,
        "patch_size": config.patch_size,
        "spatial_merge_size": config.merge_size,
        "temporal_patch_size": 2,
    }
    special = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if config.family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        tile = _llava_tile(config)
        text_qwen2 = {k: v for k, v in text.items() if k != "rope_parameters"}
        return LlavaOnevisionConfig(
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": config.vision_embed_dim,
                "intermediate_size": 2 * config.vision_embed_dim,
                "num_hidden_layers": config.vision_depth,
                "num_attention_heads": config.vision_heads,
                "image_size": tile,
                "patch_size": config.patch_size,
            },
            text_config={"model_type": "qwen2", **text_qwen2},
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=[[tile * a, tile * b] for a in (1, 2) for b in (1, 2)],
        )
    if config.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            **vision_common,
            "hidden_size": config.vision_embed_dim,
            "intermediate_size": 2 * config.vision_embed_dim,
            "out_hidden_size": config.hidden_size,
            "window_size": 2 * config.patch_size * config.merge_size,
            "fullatt_block_indexes": [config.vision_depth - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
    from transformers import Qwen2VLConfig

    vision = {**vision_common, "embed_dim": config.vision_embed_dim, "hidden_size": config.hidden_size, "mlp_ratio": 2}
    return Qwen2VLConfig(text_config=text, vision_config=vision, **special)


def build_tiny_vlm(config: TinyVLMConfig | None = None, *, attn_implementation: str = "sdpa") -> VLMBundle:
    """A tiny randomly initialised Qwen2-VL (Qwen2.5-VL, LLaVA-OneVision) and its processor, seeded by `config.seed`.

    The global torch RNG is left untouched (the seed applies inside a forked RNG state).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    config = config or TinyVLMConfig()
    processor = build_tiny_processor(config)
    model_config = _model_config(config, processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AutoModelForImageTextToText.from_config(
            model_config, attn_implementation=attn_implementation, dtype=torch.float32
        )
    model.eval()
    tok = processor.tokenizer
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    return VLMBundle(model=model, processor=processor, family=config.family, prompt=config.prompt_config())
