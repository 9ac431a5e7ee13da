"""`VLMLocalizer`: in-context localization by a VLM, with batched generation and support-prefix KV-cache reuse.

The prompt puts the supports first and the query last, so every query of a video (same supports, new frame) shares
the same prompt prefix: the supports' images and boxes, often 80% of the tokens. The localizer runs that prefix
through the model once, keeps its KV cache, and for each batch of queries only encodes the query image and decodes
the answer, copying the cache per query. Qwen2-VL's 3-D rotary positions (M-RoPE) of the query tokens depend on
the supports' image grids, so generation still receives the full token ids and every image grid; only the
vision tower and the prefix's transformer layers are skipped. A test checks the answer is the same, token for
token, as generating from scratch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from focuskit.core.config import load_config
from focuskit.core.episode import Episode, ImageRef, Prediction, Support, validate_supports
from focuskit.core.errors import ConfigError
from focuskit.localizers.base import register_localizer
from focuskit.models.vlms.factory import VLMBundle, load_vlm
from focuskit.models.vlms.generation import (
    GenerationSettings,
    base_model,
    build_generation_config,
    first_stop,
    generate,
    stop_token_ids,
)
from focuskit.models.vlms.parsing import parse_box
from focuskit.models.vlms.prompts import BuiltPrompt, build_prompt, processor_image_kwargs

PREFIX_CACHE_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
"""Families whose prefix reuse is verified against from-scratch generation (tests/test_vlm_localizer.py)."""


@dataclass
class VLMLocalizerConfig:
    """Generation and runtime options of `VLMLocalizer` (YAML via `--config`)."""

    batch_size: int = 8
    """Queries decoded together. Memory grows with batch_size x (prefix + query tokens)."""
    max_new_tokens: int = 48
    do_sample: bool = False
    """Greedy decoding by default: localization answers should be deterministic."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    """1.0: off. Every generation parameter is set from this config, never from the checkpoint's
    generation_config (Qwen2-VL-Instruct ships repetition_penalty 1.05, top_k 1, top_p 0.001)."""
    seed: int = 0
    """Seed for sampling (ignored when greedy); applied in a forked RNG so global state is untouched."""
    prefix_cache: bool = True
    """Reuse the supports' KV cache across queries that share supports (Qwen families)."""
    allow_absent: bool | None = None
    """Override the checkpoint's prompt setting for "not present" answers (None: keep the checkpoint's)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] | None = None
    load_in_4bit: bool = False
    device: str = "auto"
    """"auto" is the first CUDA GPU when present, else CPU."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        self.generation_settings()  # validates the sampling fields

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
        )


@dataclass(frozen=True)
class GeneratedAnswer:
    """One decoded answer: its text (special tokens kept, end-of-turn dropped), token ids and confidence."""

    text: str
    token_ids: tuple[int, ...]
    confidence: float
    """exp(mean log-probability) of the answer tokens including the end-of-turn token, in (0, 1]."""


class VLMLocalizer:
    """Implements `Localizer` with a VLM: prompt, generate, parse; many queries per call with prefix reuse."""

    name = "vlm"

    def __init__(self, bundle: VLMBundle, config: VLMLocalizerConfig | None = None) -> None:
        import torch

        self.config = config or VLMLocalizerConfig()
        self.bundle = bundle
        self.family = bundle.family
        self.prompt = copy.deepcopy(bundle.prompt)
        if self.config.allow_absent is not None:
            self.prompt.allow_absent = self.config.allow_absent
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if not getattr(bundle.model, "hf_device_map", None) and not getattr(bundle.model, "is_loaded_in_4bit", False):
            bundle.model.to(self.device)
        bundle.model.eval()
        tok = bundle.processor.tokenizer
        self._eos_ids = stop_token_ids(tok, self.family)
        self._generation_config = build_generation_config(
            self.config.generation_settings(), tok, self.family, output_scores=True
        )

    @classmethod
    def from_pretrained(cls, model: str | Path, config: VLMLocalizerConfig | None = None) -> VLMLocalizer:
        config = config or VLMLocalizerConfig()
        bundle = load_vlm(
            model,
            dtype=config.dtype,
            load_in_4bit=config.load_in_4bit,
            attn_implementation=config.attn_implementation,
        )
        return cls(bundle, config)

    # --- public API ---------------------------------------------------------------------------------------------
    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction:
        return self.localize_many(supports, [query_image])[0]

    def localize_many(
        self, supports: Sequence[Support], queries: Sequence[ImageRef], *, progress: bool = False
    ) -> list[Prediction]:
        """Localize the supports' object in every query; the supports' prefix is encoded once (see module doc)."""
        sizes, answers = self._answer(supports, queries, progress=progress)
        return [self._prediction(size, resized, a) for (size, resized), a in zip(sizes, answers, strict=True)]

    def generate(
        self, supports: Sequence[Support], queries: Sequence[ImageRef], *, progress: bool = False
    ) -> list[GeneratedAnswer]:
        """The raw answers for every query, before parsing (for inspection and debugging prompts)."""
        return self._answer(supports, queries, progress=progress)[1]

    def localize_episodes(self, episodes: Sequence[Episode], *, progress: bool | None = None) -> list[Prediction]:
        """Localize many episodes, grouping those with identical supports so each group shares one prefix.

        The evaluation runner calls this when present. A progress bar shows by default when there is more than
        one batch of work.
        """
        if progress is None:
            progress = len(episodes) > self.config.batch_size
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, ep in enumerate(episodes):
            key = tuple((_image_key(s.image), s.box.to_xyxy()) for s in ep.supports)
            groups.setdefault(key, []).append(i)
        results: list[Prediction | None] = [None] * len(episodes)
        bar = tqdm(total=len(episodes), desc="vlm localize", unit="episode", disable=not progress)
        for idx in groups.values():
            preds = self.localize_many(episodes[idx[0]].supports, [episodes[i].query_image for i in idx])
            for i, p in zip(idx, preds, strict=True):
                results[i] = p
            bar.update(len(idx))
        bar.close()
        return [p for p in results if p is not None]

    # --- generation ---------------------------------------------------------------------------------------------
    def _answer(
        self, supports: Sequence[Support], queries: Sequence[ImageRef], *, progress: bool
    ) -> tuple[list[tuple[tuple[int, int], tuple[int, int]]], list[GeneratedAnswer]]:
        """Answers for every query, with each query's (original, resized) size for parsing.

        Queries are loaded one batch at a time, so a long video never sits in memory whole.
        """
        supports = validate_supports(supports)
        # Load the support pixels once rather than once per query.
        loaded = [Support(s.load(), s.box) for s in supports]
        sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        answers: list[GeneratedAnswer] = []
        cache: tuple[str, tuple[dict[str, Any], Any]] | None = None
        use_prefix = self.config.prefix_cache and self.family in PREFIX_CACHE_FAMILIES
        step = self.config.batch_size
        bar = tqdm(total=len(queries), desc="vlm localize", unit="query", disable=not progress)
        for start in range(0, len(queries), step):
            chunk = [
                build_prompt(
                    self.bundle.processor, loaded, q, self.prompt, family=self.family, where=f"query {start + i + 1}"
                )
                for i, q in enumerate(queries[start : start + step])
            ]
            if use_prefix and cache is None:
                cache = (chunk[0].prefix_text, self._prefix_cache(chunk[0]))
            if cache is not None and all(p.prefix_text == cache[0] for p in chunk):
                answers += self._generate_with_prefix(chunk, cache[1])
            else:
                answers += self._generate(chunk)
            sizes += [(p.query_image_size, p.query_resized_size) for p in chunk]
            bar.update(len(chunk))
        bar.close()
        return sizes, answers

    def _encode(self, texts: list[str], images: list[list[Any]]) -> dict[str, Any]:
        """Processor call for a batch; `images` holds each text's images (nested: LLaVA-OV counts them per text)."""
        enc = self.bundle.processor(
            text=texts,
            images=images,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            **processor_image_kwargs(self.family, self.prompt),
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def _run_generate(self, **inputs: Any) -> list[GeneratedAnswer]:
        import torch

        prompt_len = inputs["input_ids"].shape[1]
        model = self.bundle.model
        seed = self.config.seed if self.config.do_sample else None
        with torch.inference_mode():
            out = generate(model, inputs, self._generation_config, seed=seed)
            logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        new_tokens = out.sequences[:, prompt_len:].tolist()
        results = []
        for row, lp in zip(new_tokens, logprobs.tolist(), strict=True):
            end = first_stop(row, self._eos_ids)
            text = self.bundle.processor.tokenizer.decode(row[:end], skip_special_tokens=False)
            scored = [v for v in lp[: end + 1] if math.isfinite(v)]
            confidence = math.exp(sum(scored) / len(scored)) if scored else 0.0
            results.append(GeneratedAnswer(text=text.strip(), token_ids=tuple(row[:end]), confidence=confidence))
        return results

    def _generate(self, prompts: list[BuiltPrompt]) -> list[GeneratedAnswer]:
        """From scratch: full prompts, left-padded into one batch."""
        inputs = self._encode([p.text for p in prompts], [p.images for p in prompts])
        return self._run_generate(**inputs)

    def _prefix_cache(self, prompt: BuiltPrompt) -> tuple[dict[str, Any], Any]:
        """Run the supports' prefix once; returns its encoding and its KV cache (batch 1)."""
        import torch

        prefix = self._encode([prompt.prefix_text], [prompt.images[:-1]])
        with torch.inference_mode():
            out = self.bundle.model(**prefix, use_cache=True, logits_to_keep=1)
        return prefix, out.past_key_values

    def _generate_with_prefix(
        self, prompts: list[BuiltPrompt], cached: tuple[dict[str, Any], Any]
    ) -> list[GeneratedAnswer]:
        """Reuse the prefix KV cache: encode only the query images and suffix tokens, then decode.

        The full token ids (prefix + left-padded suffix) still go to `generate`, which skips the cached positions
        but needs them, with every image grid in prompt order, to compute the suffix's M-RoPE positions; the
        padding between prefix and suffix is masked out by the attention mask.
        """
        import torch

        prefix, cache = cached
        n = len(prompts)
        suffix = self._encode([p.suffix_text for p in prompts], [[p.images[-1]] for p in prompts])
        base = base_model(self.bundle.model)
        with torch.inference_mode():
            features = base.get_image_features(suffix["pixel_values"], suffix["image_grid_thw"], return_dict=True)
        grids = torch.cat(
            [torch.cat([prefix["image_grid_thw"], suffix["image_grid_thw"][i : i + 1]]) for i in range(n)]
        )
        cache_copy = copy.deepcopy(cache)
        cache_copy.batch_repeat_interleave(n)
        return self._run_generate(
            input_ids=torch.cat([prefix["input_ids"].expand(n, -1), suffix["input_ids"]], dim=1),
            attention_mask=torch.cat([prefix["attention_mask"].expand(n, -1), suffix["attention_mask"]], dim=1),
            mm_token_type_ids=torch.cat(
                [prefix["mm_token_type_ids"].expand(n, -1), suffix["mm_token_type_ids"]], dim=1
            ),
            image_grid_thw=grids,
            mm_encoder_outputs={"image": features},
            past_key_values=cache_copy,
        )

    def _prediction(
        self, image_size: tuple[int, int], resized: tuple[int, int], generated: GeneratedAnswer
    ) -> Prediction:
        parsed = parse_box(generated.text, self.family, image_size, resized)
        meta: dict[str, Any] = {"text": generated.text, "form": parsed.form}
        if parsed.reason:
            meta["parse"] = parsed.reason
        if not parsed.ok:
            return Prediction(box=None, score=0.0, meta={**meta, "parse_failed": True})
        return Prediction(box=parsed.box, score=generated.confidence, meta=meta)


def _image_key(image: ImageRef) -> Any:
    return str(Path(image).resolve()) if isinstance(image, (str, Path)) else id(image)


def load_localizer_config(path: str | Path | None) -> VLMLocalizerConfig:
    return load_config(VLMLocalizerConfig, path)


@register_localizer("vlm")
def create_vlm_localizer(model: str | Path | None = None, config: str | Path | None = None) -> VLMLocalizer:
    """`create_localizer("vlm", model=PATH, config=YAML)`: a checkpoint directory or hub id, and generation options."""
    if model is None or not str(model).strip():
        raise ConfigError("the vlm engine needs --model PATH (a checkpoint directory or hub id)")
    return VLMLocalizer.from_pretrained(model, load_localizer_config(config))


__all__ = ["GeneratedAnswer", "VLMLocalizer", "VLMLocalizerConfig", "create_vlm_localizer"]
