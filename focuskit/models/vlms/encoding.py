"""Episodes -> model inputs, with the token index sets the FOCUS attention loss needs.

`encode_episode` runs the real processor on the rendered prompt (so `mm_token_type_ids`, `image_grid_thw` and the
image-token expansion are exactly what the model expects) and then locates, in the resulting token ids:

- the answer tokens and the end-of-turn token (the only positions with labels),
- the support-box text tokens (mask M of the attention loss),
- the query image's visual tokens (rows Q of the attention loss).

Positions are found by matching token ids, never by assuming a template layout, and every lookup is checked: a
tokenizer that merged text across a boundary raises instead of silently training on the wrong tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from focuskit.core.episode import Episode
from focuskit.core.errors import ModelError
from focuskit.core.image import image_size
from focuskit.models.vlms.families import Family, family_of_processor, family_spec, resolve_box_format
from focuskit.models.vlms.prompts import (
    BuiltPrompt,
    PromptConfig,
    answer_text,
    build_prompt,
    processor_image_kwargs,
    resized_size,
)

IGNORE_INDEX = -100
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
"""Processor outputs with one value per token: padded in `collate_encoded`; all others are concatenated."""


@dataclass
class EncodedEpisode:
    """One episode as model inputs (batch dim 1) plus the masks the attention loss needs. See docs/ARCHITECTURE.md."""

    inputs: dict[str, torch.Tensor]
    """Processor outputs: input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, ..."""
    labels: torch.Tensor | None
    """(1, L) int64: -100 except the answer tokens and the end-of-turn token (None unless with_answer)."""
    box_token_mask: torch.Tensor
    """(1, L) bool: the support-box text tokens (mask M)."""
    query_image_mask: torch.Tensor
    """(1, L) bool: the query image's visual tokens (rows Q)."""
    answer_text: str | None
    """The target answer (the query box in the family's form, or "not present"); None unless with_answer."""
    query_image_size: tuple[int, int] = (0, 0)
    """(width, height) of the original query image: what `parse_box` needs to map an answer back to pixels."""
    query_resized_size: tuple[int, int] = (0, 0)
    """(width, height) of the query image as the model sees it (Qwen2.5-VL answers are pixels of this)."""
    pad_token_id: int = 0

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def image_token_runs(input_ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """[start, end) of each contiguous run of `image_token_id` in a 1-D id tensor, in order (one run per image)."""
    is_img = (input_ids == image_token_id).to(torch.int8)
    if not bool(is_img.any()):
        return []
    edges = torch.diff(torch.cat([is_img.new_zeros(1), is_img, is_img.new_zeros(1)]))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends, strict=True))


def _find(haystack: list[int], needle: list[int], start: int, end: int) -> int:
    n = len(needle)
    for i in range(start, end - n + 1):
        if haystack[i : i + n] == needle:
            return i
    return -1


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_resize(family: Family, inputs: dict[str, torch.Tensor], built: BuiltPrompt, processor: Any) -> None:
    """The processor must resize as the prompt assumed (Qwen2.5-VL boxes are pixels of the resized image)."""
    grid = inputs.get("image_grid_thw")
    if family == "llava_onevision" or grid is None:
        return
    patch = int(getattr(processor.image_processor, "patch_size", 14))
    got = [(int(w) * patch, int(h) * patch) for _, h, w in grid.tolist()]
    if got != built.resized_sizes:
        raise ModelError(
            f"the processor resized the images to {got}, but the prompt assumed {built.resized_sizes}: the "
            "processor's patch/merge size or min/max pixels disagree with the prompt config"
        )


def encode_episode(
    processor: Any,
    episode: Episode,
    *,
    with_answer: bool,
    prompt: PromptConfig,
    family: Family | None = None,
) -> EncodedEpisode:
    """Encode `episode` for the model behind `processor` (family inferred from the processor's class).

    With `with_answer=True` the target answer and end-of-turn token are appended and labelled (SFT); otherwise
    the inputs end with the generation prompt (inference, GRPO rollouts).
    """
    family = family or family_of_processor(processor)
    spec = family_spec(family)
    tokenizer = processor.tokenizer
    built = build_prompt(
        processor,
        episode.supports,
        episode.query_image,
        prompt,
        family=family,
        query_box=episode.query_box,
        with_answer=with_answer,
        where=f"episode {episode.id!r}",
    )
    text = built.text + (f"{built.answer}{spec.end_of_turn}" if with_answer else "")
    inputs = dict(
        processor(
            text=[text],
            images=[built.images],  # nested per text: LLaVA-OneVision counts images per sample from this
            return_tensors="pt",
            **processor_image_kwargs(family, prompt),
        )
    )
    _check_resize(family, inputs, built, processor)
    ids = inputs["input_ids"][0]
    id_list = ids.tolist()
    length = len(id_list)

    image_id = tokenizer.convert_tokens_to_ids(spec.image_token)
    runs = image_token_runs(ids, image_id)
    if len(runs) != len(built.images):
        raise ModelError(
            f"episode {episode.id!r}: found {len(runs)} runs of image tokens for {len(built.images)} images; "
            "the processor did not expand the placeholders as expected"
        )
    query_mask = torch.zeros(1, length, dtype=torch.bool)
    query_mask[0, runs[-1][0] : runs[-1][1]] = True

    box_mask = torch.zeros(1, length, dtype=torch.bool)
    for i, box_text in enumerate(built.box_texts):
        needle = _token_ids(tokenizer, box_text)
        pos = _find(id_list, needle, runs[i][1], runs[i + 1][0])
        if pos < 0:
            raise ModelError(
                f"episode {episode.id!r}: the tokens of support {i + 1}'s box text {box_text!r} were not found "
                "between its image and the next one; the tokenizer merges them with neighbouring text"
            )
        box_mask[0, pos : pos + len(needle)] = True

    labels = None
    if with_answer:
        answer_ids = _token_ids(tokenizer, f"{built.answer}{spec.end_of_turn}")
        if id_list[length - len(answer_ids) :] != answer_ids:
            raise ModelError(
                f"episode {episode.id!r}: the answer {built.answer!r} tokenizes differently after the prompt than "
                "alone; cannot tell which tokens to label"
            )
        labels = torch.full((1, length), IGNORE_INDEX, dtype=torch.long)
        labels[0, length - len(answer_ids) :] = ids[length - len(answer_ids) :]

    pad_id = tokenizer.pad_token_id
    return EncodedEpisode(
        inputs=inputs,
        labels=labels,
        box_token_mask=box_mask,
        query_image_mask=query_mask,
        answer_text=built.answer,
        query_image_size=built.query_image_size,
        query_resized_size=built.query_resized_size,
        pad_token_id=int(pad_id) if pad_id is not None else 0,
    )


def collate_encoded(
    items: Sequence[EncodedEpisode],
    *,
    padding_side: Literal["left", "right"] = "right",
    pad_token_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """Batch encoded episodes: per-token tensors padded to the longest, visual tensors concatenated.

    Returns the model inputs plus `labels` (when every item has them; padding is -100), `box_token_mask` and
    `query_image_mask` (padding is False). Right padding suits training; left padding suits generation.
    """
    if not items:
        raise ModelError("collate_encoded needs at least one encoded episode, got an empty list")
    if padding_side not in ("left", "right"):
        raise ModelError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad_id = items[0].pad_token_id if pad_token_id is None else pad_token_id
    max_len = max(it.length for it in items)

    def pad(t: torch.Tensor, value: int | bool) -> torch.Tensor:
        extra = max_len - t.shape[1]
        if extra == 0:
            return t
        filler = torch.full((t.shape[0], extra), value, dtype=t.dtype)
        return torch.cat([filler, t] if padding_side == "left" else [t, filler], dim=1)

    batch: dict[str, torch.Tensor] = {}
    keys = list(items[0].inputs)
    for key in keys:
        values = [it.inputs[key] for it in items]
        if key in TOKEN_KEYS:
            batch[key] = torch.cat([pad(v, pad_id if key == "input_ids" else 0) for v in values], dim=0)
        else:
            batch[key] = _concat_visual(values)
    batch["box_token_mask"] = torch.cat([pad(it.box_token_mask, False) for it in items], dim=0)
    batch["query_image_mask"] = torch.cat([pad(it.query_image_mask, False) for it in items], dim=0)
    if all(it.labels is not None for it in items):
        batch["labels"] = torch.cat([pad(it.labels, IGNORE_INDEX) for it in items], dim=0)  # type: ignore[arg-type]
    return batch


def _concat_visual(values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding dim 1 when it differs (LLaVA-OneVision's per-image patch count)."""
    if values[0].ndim >= 2 and len({v.shape[1] for v in values}) > 1:
        width = max(v.shape[1] for v in values)
        padded = []
        for v in values:
            shape = list(v.shape)
            shape[1] = width - v.shape[1]
            padded.append(torch.cat([v, v.new_zeros(shape)], dim=1))
        values = padded
    return torch.cat(values, dim=0)


def episode_answer(
    episode: Episode, family: Family, prompt: PromptConfig, processor: Any | None = None
) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """The target answer text of an episode, with the query's original and resized sizes, reading no pixels.

    This is what SFT labels and GRPO rewards compare against: (answer, image_size, resized_size), where the sizes
    are what `parse_box` needs to turn a generated answer back into pixels.
    """
    size = image_size(episode.query_image)
    rsize = resized_size(family, size, prompt, processor)
    box_format = resolve_box_format(family, prompt.box_format)
    return answer_text(episode.query_box, box_format, size, rsize), size, rsize
