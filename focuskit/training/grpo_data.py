"""Episodes as a TRL GRPO dataset: one row per episode, built lazily, rendered exactly as SFT and evaluation render it.

TRL's `GRPOTrainer` reads a `datasets.Dataset` whose rows carry a conversational `prompt` and its `images`; every
other column reaches the reward functions as a keyword argument. Rows here hold:

- `prompt`: the chat messages `build_prompt` renders (instruction, each support image followed by its box text, the
  query image), with empty image placeholders that TRL fills from `images`;
- `images`: the support images then the query image (PIL), loaded only when the row is read;
- `solution`, `image_size`, `resized_size`, `family`, `allow_absent`: what `rewards.py` needs to score an answer;
- `episode_index`: which episode, so `FocusGRPOTrainer` can take the prompt tokens and pixels from `encode_episode`.

The dataset is an index column with a `with_transform`, so a million-episode file costs its paths, not its pixels.

Why rendering matters: Qwen2.5-VL boxes are pixels of the *resized* image, and the number of visual tokens depends
on the resize, so the processor TRL calls must resize with the checkpoint's `PromptConfig`. `configure_processor` sets
its pixel limits (TRL forwards no per-call resize options) and `check_prompt_identity` asserts, before step one, that
TRL's forward-pass rendering gives the same tokens and pixels as `encode_episode`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from focuskit.core.episode import Episode
from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms.encoding import EncodedEpisode, encode_episode, episode_answer
from focuskit.models.vlms.families import Family
from focuskit.models.vlms.prompts import PromptConfig, build_prompt, episode_messages

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def configure_processor(processor: Any, family: Family, prompt: PromptConfig) -> None:
    """Make `processor` resize as `prompt` says and pad on the left, as TRL's GRPO trainer requires.

    TRL calls the processor without focuskit's per-call `size` option (`processor_image_kwargs`), so the limits
    are set on the image processor itself; the saved checkpoints then carry the same limits.
    """
    if family not in QWEN_FAMILIES:
        raise ConfigError(
            f"GRPO supports the Qwen2-VL and Qwen2.5-VL families, not {family!r}: TRL's GRPOTrainer renders images "
            "as content blocks, and LLaVA-OneVision's chat template moves every image before the text, which loses "
            "the support/box interleaving FOCUS prompts depend on"
        )
    ip = processor.image_processor
    ip.size = {"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels}
    for name, value in (("min_pixels", prompt.min_pixels), ("max_pixels", prompt.max_pixels)):
        if hasattr(ip, name):
            setattr(ip, name, value)
    processor.tokenizer.padding_side = "left"


class GRPOEpisodes:
    """Episodes, the processor and the prompt config: TRL rows on demand and `encode_episode` inputs (cached).

    `cache=True` keeps every encoded prompt (tiny runs that sample the same episodes many times); otherwise only
    the episodes of the current generation batch are kept, since each appears `num_generations` times in it.
    """

    def __init__(
        self, episodes: Sequence[Episode], processor: Any, family: Family, prompt: PromptConfig, *, cache: bool
    ) -> None:
        if not episodes:
            raise ModelError("GRPO needs at least one training episode")
        self.episodes = list(episodes)
        self.processor = processor
        self.family = family
        self.prompt = prompt
        self.cache = cache
        self._encoded: dict[int, EncodedEpisode] = {}

    def __len__(self) -> int:
        return len(self.episodes)

    def row(self, index: int) -> dict[str, Any]:
        """The TRL dataset row of episode `index` (loads its images)."""
        ep = self.episodes[index]
        built = build_prompt(
            self.processor, ep.supports, ep.query_image, self.prompt, family=self.family, where=f"episode {ep.id!r}"
        )
        answer, size, rsize = episode_answer(ep, self.family, self.prompt, self.processor)
        return {
            "episode_index": index,
            "prompt": episode_messages(self.family, self.prompt, built.box_texts),
            "images": built.images,
            "solution": answer,
            "image_size": list(size),
            "resized_size": list(rsize),
            "family": self.family,
            "allow_absent": self.prompt.allow_absent,
        }

    def encoded(self, index: int) -> EncodedEpisode:
        """`encode_episode` of episode `index`: exactly what evaluation feeds the model."""
        if index not in self._encoded:
            self._encoded[index] = encode_episode(
                self.processor, self.episodes[index], with_answer=False, prompt=self.prompt, family=self.family
            )
        return self._encoded[index]

    def release(self, keep: Sequence[int]) -> None:
        """Forget encoded prompts not in `keep` (unless caching everything)."""
        if not self.cache:
            wanted = set(keep)
            self._encoded = {i: e for i, e in self._encoded.items() if i in wanted}

    def to_dataset(self) -> Any:
        """A `datasets.Dataset` of episode indices whose rows are built on access (`row`)."""
        from datasets import Dataset

        def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            rows = [self.row(int(i)) for i in batch["episode_index"]]
            return {key: [r[key] for r in rows] for key in rows[0]}

        return Dataset.from_dict({"episode_index": list(range(len(self.episodes)))}).with_transform(transform)


def check_prompt_identity(data: GRPOEpisodes, index: int = 0) -> None:
    """Raise `ModelError` unless TRL's forward-pass rendering of episode `index` equals `encode_episode`'s.

    TRL recomputes the prompt's pixels for the log-probability passes from the row's messages and images (the
    chat template, then the processor); generation uses `encode_episode`. Both must see identical tokens and pixels,
    or the policy is scored on a different input than it sampled from.
    """
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    row = data.row(index)
    messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
    text = apply_chat_template({"prompt": messages}, data.processor)["prompt"]
    trl_inputs = data.processor(images=[row["images"]], text=[text], padding=True, return_tensors="pt")
    ours = data.encoded(index).inputs
    for key in ("input_ids", "image_grid_thw", "pixel_values", "mm_token_type_ids"):
        if key not in ours:
            continue
        a, b = ours[key], trl_inputs.get(key)
        if b is None or a.shape != b.shape or not torch.equal(a, b.to(a.dtype)):
            shapes = f"{tuple(a.shape)} vs {None if b is None else tuple(b.shape)}"
            raise ModelError(
                f"TRL's rendering of episode {data.episodes[index].id!r} differs from encode_episode in {key} "
                f"({shapes}): training would score answers on other pixels or tokens than evaluation uses"
            )
