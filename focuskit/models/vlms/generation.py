"""VLM plumbing shared by the localizer, the trainers and the analysis: token sets, stop ids, unwrapping, generation.

Before this module the vision-token set and the stop-id set were written out in three places (the localizer, the
GRPO trainer, the attention analysis); a fix in one would silently not reach the others.

**Every generation parameter is explicit.** Real checkpoints ship a `generation_config.json` (Qwen2-VL-7B-Instruct:
`do_sample: true`, `temperature: 0.1`, `top_k: 1`, `top_p: 0.001`, `repetition_penalty: 1.05`), and transformers
fills every parameter a call leaves unset (None) from it. A repetition penalty in evaluation penalises the digits
already written in the support boxes; in GRPO rollouts it samples from a distribution other than the one whose
log-probabilities enter the ratio. So `build_generation_config` names every parameter that shapes the next-token
distribution, and `generate` runs with the checkpoint's defaults swapped out for an empty `GenerationConfig`, so a
parameter this module does not know about cannot leak in either (tests/test_vlm_generation.py saves a checkpoint
with such a config and checks the answers are unchanged).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from focuskit.models.vlms.families import family_spec
from focuskit.models.vlms.sampling import check_sampling

VISION_TOKENS: tuple[str, ...] = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<image>",
)
"""Tokens that only the processor may place (image/video placeholders and their brackets, every family). A model
that writes one in an answer breaks the next forward (the processor's token count no longer matches the features),
so generation suppresses them."""


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Sorted ids of the `VISION_TOKENS` this tokenizer has (the others are skipped)."""
    vocab = tokenizer.get_vocab()
    return sorted({int(vocab[t]) for t in VISION_TOKENS if t in vocab})


def stop_token_ids(tokenizer: Any, family: str) -> list[int]:
    """Sorted ids that end an answer: the family's end-of-turn token, the tokenizer's eos and its pad token.

    The pad token is included because batched generation pads finished rows with it, and some checkpoints (HF
    Trainer saves) set eos to pad.
    """
    spec = family_spec(family)
    ids = {tokenizer.convert_tokens_to_ids(spec.end_of_turn), tokenizer.eos_token_id, tokenizer.pad_token_id}
    ids.discard(None)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and tokenizer.convert_tokens_to_ids(spec.end_of_turn) == unk:
        ids.discard(unk)  # a tokenizer without the end-of-turn token maps it to unk: never stop on unk
    return sorted(int(i) for i in ids)


def pad_token_id(tokenizer: Any, family: str) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its first stop id."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else stop_token_ids(tokenizer, family)[0]


def unwrap_model(model: Any) -> Any:
    """The model under DDP / DataParallel / DeepSpeed / FSDP / `torch.compile` wrappers; a peft model stays peft.

    Generation, adapter switching (`disable_adapter`) and saving need this; gradients must still flow through the
    wrapper, so trainers keep both. Uses accelerate's own unwrapping, which knows every wrapper it makes.
    """
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=True, keep_torch_compile=False)


def base_model(model: Any) -> Any:
    """The transformers model itself: unwrapped (see `unwrap_model`) and, for a peft model, its base model."""
    model = unwrap_model(model)
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def text_config(model: Any) -> Any:
    """The language model's config (a VLM's `text_config`, or the config of a text-only model)."""
    config = base_model(model).config
    return getattr(config, "text_config", None) or config


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are decoded. Every field is passed to `generate`; nothing comes from the checkpoint."""

    max_new_tokens: int = 48
    do_sample: bool = False
    """False: greedy (localization answers should be deterministic). True: multinomial sampling (GRPO rollouts)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k (transformers' own default is 50, Qwen2-VL-Instruct's generation config says 1)."""
    repetition_penalty: float = 1.0
    """1.0 disables it. Qwen2-VL-Instruct checkpoints ship 1.05, which penalises the digits of the support boxes."""
    num_return_sequences: int = 1
    suppress_vision_tokens: bool = True
    """Forbid `VISION_TOKENS` in answers (see there)."""

    def __post_init__(self) -> None:
        check_sampling(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_new_tokens=self.max_new_tokens
        )
        from focuskit.core.errors import ConfigError

        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1.0 disables it), got {self.repetition_penalty}")
        if self.num_return_sequences < 1:
            raise ConfigError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")


NEUTRAL_PARAMETERS: dict[str, Any] = {
    "num_beams": 1,
    "min_length": 0,
    "min_new_tokens": None,
    "typical_p": 1.0,
    "min_p": None,
    "top_h": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "guidance_scale": None,
    "watermarking_config": None,
    "dola_layers": None,
    "penalty_alpha": None,
    "prompt_lookup_num_tokens": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "stop_strings": None,
    "max_time": None,
    "use_cache": True,
}
"""The parameters focuskit never uses, at values that leave the distribution unchanged. None is only safe because
`generate` also swaps the checkpoint's defaults out (transformers fills None from them)."""


def build_generation_config(
    settings: GenerationSettings, tokenizer: Any, family: str, *, output_scores: bool = False
) -> Any:
    """A `transformers.GenerationConfig` with every parameter that shapes the answer set from `settings`.

    `output_scores=True` also returns the per-step scores in a `GenerateDecoderOnlyOutput` (for confidences).
    """
    from transformers import GenerationConfig

    suppress = vision_token_ids(tokenizer) if settings.suppress_vision_tokens else []
    sample = settings.do_sample
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        # Greedy decoding ignores the warpers; neutral values keep transformers from warning about unused ones.
        temperature=settings.temperature if sample else 1.0,
        top_p=settings.top_p if sample else 1.0,
        top_k=settings.top_k if sample else 0,
        repetition_penalty=settings.repetition_penalty,
        num_return_sequences=settings.num_return_sequences,
        eos_token_id=stop_token_ids(tokenizer, family),
        pad_token_id=pad_token_id(tokenizer, family),
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        suppress_tokens=suppress or None,
        return_dict_in_generate=output_scores,
        output_scores=output_scores,
        **NEUTRAL_PARAMETERS,
    )


_SWAP_LOCK = threading.Lock()
_SWAPPED: dict[int, tuple[int, Any]] = {}
"""id(base model) -> (generations in flight, the checkpoint's generation_config), for concurrent generations."""


@contextlib.contextmanager
def checkpoint_generation_defaults_disabled(model: Any) -> Iterator[None]:
    """Within the block, the model's `generation_config` (the checkpoint's defaults) is an empty one.

    transformers fills each parameter a call leaves at None from `model.generation_config`; with an empty one
    those stay at transformers' neutral library defaults instead of the checkpoint's. Safe for concurrent
    generations on one model (a server's threads): the first to enter swaps, the last to leave restores.
    """
    from transformers import GenerationConfig

    base = base_model(model)
    key = id(base)
    with _SWAP_LOCK:
        count, saved = _SWAPPED.get(key, (0, None))
        if count == 0:
            saved = getattr(base, "generation_config", None)
            base.generation_config = GenerationConfig()
        _SWAPPED[key] = (count + 1, saved)
    try:
        yield
    finally:
        with _SWAP_LOCK:
            count, saved = _SWAPPED.pop(key)
            if count > 1:
                _SWAPPED[key] = (count - 1, saved)
            else:
                base.generation_config = saved


def generate(model: Any, inputs: Mapping[str, Any], generation_config: Any, *, seed: int | None = None) -> Any:
    """`model.generate(**inputs)` with exactly `generation_config` (see the module doc), on the unwrapped model.

    `seed` (for sampling) is applied inside a forked CPU/GPU RNG, so the caller's global random state is untouched.
    Returns what transformers returns: token ids (B * num_return_sequences, prompt + new), or a
    `GenerateDecoderOnlyOutput` when the config asks for scores.
    """
    import torch

    target = unwrap_model(model)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with (
        torch.no_grad(),
        checkpoint_generation_defaults_disabled(target),
        torch.random.fork_rng(devices=devices, enabled=seed is not None),
    ):
        if seed is not None:
            torch.manual_seed(seed)
        return target.generate(**inputs, generation_config=generation_config)


def first_stop(row: list[int], stop_ids: list[int] | set[int]) -> int:
    """Index of the first stop id in `row` (its length when none): the answer is `row[:first_stop(row)]`."""
    stops = set(stop_ids)
    return next((i for i, t in enumerate(row) if t in stops), len(row))


__all__ = [
    "NEUTRAL_PARAMETERS",
    "VISION_TOKENS",
    "GenerationSettings",
    "base_model",
    "build_generation_config",
    "checkpoint_generation_defaults_disabled",
    "first_stop",
    "generate",
    "pad_token_id",
    "stop_token_ids",
    "text_config",
    "unwrap_model",
    "vision_token_ids",
]
