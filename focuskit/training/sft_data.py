"""Episodes -> SFT examples (`EncodedEpisode`s with labels and the attention-loss masks), checked before training.

Every episode is checked up front, reading only image headers: boxes inside their images, absent queries only when
the prompt allows "not present" answers, images the processor can resize, and a sequence (text + visual tokens)
within `max_seq_length`. Images larger than `prompt.max_pixels` are not an error in themselves (the processor
downsizes them, and boxes are relative), but they decide how many visual tokens an episode costs, which is what
the length check bounds. A bad episode found at step 3,000 costs a GPU-day, so all problems are reported at once.
Encoding itself (pixels, processor) happens lazily per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from focuskit.core.episode import Episode
from focuskit.core.errors import DatasetError, FocusError
from focuskit.core.image import image_size
from focuskit.models.vlms.encoding import EncodedEpisode, collate_encoded, encode_episode
from focuskit.models.vlms.families import Family
from focuskit.models.vlms.prompts import PromptConfig, resized_size, visual_tokens

MAX_REPORTED = 5
"""How many problems a validation error lists before summarising the rest as a count."""


def load_sft_episodes(paths: Sequence[str | Path], shots: int | None = None) -> list[Episode]:
    """Episodes from every file in `paths` (focuskit JSONL, IPLoc JSON, or folders), cut to `shots` supports."""
    from focuskit.data.episodes_jsonl import load_episodes

    if not paths:
        raise DatasetError("no training data: set `data` to one or more episode files (.jsonl / IPLoc .json)")
    episodes = [ep for path in paths for ep in load_episodes(path)]
    if shots is not None:
        too_few = [ep.id for ep in episodes if ep.k < shots]
        if too_few:
            raise DatasetError(
                f"shots={shots} but {len(too_few)} episode(s) have fewer supports, e.g. {too_few[0]!r}; "
                "lower shots or drop those episodes"
            )
        episodes = [ep.with_shots(shots) for ep in episodes]
    return episodes


@dataclass(frozen=True)
class DataSummary:
    """What validation measured: the dataset's size and the longest episode in visual tokens."""

    episodes: int
    max_visual_tokens: int
    text_tokens: int
    """Non-visual tokens of the first episode (instruction, box texts, answer): the per-episode text overhead."""


def _episode_visual_tokens(episode: Episode, family: Family, prompt: PromptConfig, processor: Any) -> int:
    sizes = [image_size(s.image) for s in episode.supports] + [image_size(episode.query_image)]
    return sum(visual_tokens(resized_size(family, size, prompt, processor)) for size in sizes)


def _check_episode(episode: Episode, prompt: PromptConfig) -> None:
    for i, support in enumerate(episode.supports):
        support.box.validate(image_size(support.image), where=f"support {i + 1}, {support.image}")
    if episode.query_box is None:
        if not prompt.allow_absent:
            raise DatasetError(
                "the query has no box (object absent) but prompt.allow_absent is false: enable it to train "
                "'not present' answers, or drop absent episodes"
            )
    else:
        episode.query_box.validate(image_size(episode.query_image), where=f"query, {episode.query_image}")


def validate_episodes(
    episodes: Sequence[Episode],
    processor: Any,
    family: Family,
    prompt: PromptConfig,
    max_seq_length: int,
    *,
    progress: bool = True,
) -> DataSummary:
    """Check every episode before training; raise one `DatasetError` listing the problems found.

    The text overhead is measured by encoding the first valid episode for real; each episode's length is then
    estimated as that overhead plus its exact visual-token count (Qwen families; LLaVA-OneVision lengths are checked
    when each example is encoded).
    """
    if not episodes:
        raise DatasetError("no training episodes")
    problems: list[str] = []
    visual: list[int] = []
    qwen = family in ("qwen2_vl", "qwen2_5_vl")
    for ep in tqdm(episodes, desc="checking episodes", unit="ep", disable=not progress, leave=False):
        try:
            _check_episode(ep, prompt)
            visual.append(_episode_visual_tokens(ep, family, prompt, processor) if qwen else 0)
        except FocusError as exc:  # bad box, missing or undecodable image, absent query not allowed
            problems.append(f"episode {ep.id!r}: {exc}")
            visual.append(0)
    if problems:
        raise DatasetError(_problem_report(problems, len(episodes)))
    first = encode_episode(processor, episodes[0], with_answer=True, prompt=prompt, family=family)
    text_tokens = first.length - visual[0] if qwen else 0
    if first.length > max_seq_length:
        problems.append(f"episode {episodes[0].id!r}: {first.length} tokens")
    if qwen:
        for ep, n_visual in zip(episodes[1:], visual[1:], strict=True):
            if n_visual + text_tokens > max_seq_length:
                problems.append(f"episode {ep.id!r}: about {n_visual + text_tokens} tokens ({n_visual} visual)")
    if problems:
        raise DatasetError(
            f"episodes longer than max_seq_length={max_seq_length}; lower prompt.max_pixels (visual tokens per image "
            f"= resized pixels / 784), use fewer shots, or raise max_seq_length. "
            + _problem_report(problems, len(episodes))
        )
    return DataSummary(episodes=len(episodes), max_visual_tokens=max(visual), text_tokens=text_tokens)


def _problem_report(problems: list[str], total: int) -> str:
    shown = "; ".join(problems[:MAX_REPORTED])
    more = f"; and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return f"{len(problems)} of {total} episode(s) cannot be used: {shown}{more}"


class SFTDataset(torch.utils.data.Dataset):
    """Encodes episodes on access (labels on the answer, masks M and Q); optionally keeps them in memory.

    `cache=True` suits small datasets trained for many epochs (the tiny model's runs), where encoding would
    otherwise dominate the step time.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        processor: Any,
        family: Family,
        prompt: PromptConfig,
        max_seq_length: int,
        *,
        cache: bool = False,
    ) -> None:
        self.episodes = list(episodes)
        self.processor = processor
        self.family = family
        self.prompt = prompt
        self.max_seq_length = max_seq_length
        self._cache: dict[int, EncodedEpisode] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> EncodedEpisode:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        episode = self.episodes[index]
        encoded = encode_episode(self.processor, episode, with_answer=True, prompt=self.prompt, family=self.family)
        if encoded.length > self.max_seq_length:
            raise DatasetError(
                f"episode {episode.id!r} encodes to {encoded.length} tokens, over max_seq_length="
                f"{self.max_seq_length}; lower prompt.max_pixels or shots, or raise max_seq_length"
            )
        if self._cache is not None:
            self._cache[index] = encoded
        return encoded


def collate_for_sft(items: Sequence[EncodedEpisode]) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels and the two attention-loss masks (see `collate_encoded`)."""
    return collate_encoded(items, padding_side="right")
