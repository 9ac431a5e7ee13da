"""Attention supervision for the toy's pretraining stand-in: one head learns to look where the answer is.

Why this exists (docs/toy_ablation.md, section 4b). Trained from scratch on the instance task, the toy's language
model never learns to pick the target over its look-alike (every row and probe at 50%). An isolated probe on the
same CNN tokens located the failure: a 6 x 64 Qwen2 that must *read out* the matching query cell from its last
hidden state (as box text is read out) stays at chance after 4000 steps of batch 32, while the same model with a
pointer output (answer state dotted with the query tokens) learns the match at once (92% on clean supports).
Supervising one attention head of the read-out model, "from the answer, look at the target's query tokens", gets it
to 94%, and the skill stays when the supervision stops. A pretrained Qwen2-VL brings such retrieval heads from
pretraining; the toy's randomly initialised LM does not, so the toy's "match" pretraining stage supervises them:

* **search**: in layer `search_layer`, head `head`, the positions that predict the answer up to and including its
  first digit put their attention mass on the query-image tokens that the target box covers. Only those: once a
  digit is written (teacher forcing), the later positions can find the target from the written coordinates alone,
  and supervising them teaches "look where the box already says", not matching (a first version did, and its head
  reached 58% mass on the target while the pick rate stayed at 50%);
* **bind**: in layer `bind_layer`, head `head`, the last token of each support's box text (it has read all four
  coordinates) puts its mass on the image tokens of its own support that its box covers (box text -> region, the
  binding of Qwen2-VL's grounding pretraining).
* **gather** (optional, `gather_layer`): in that layer, head `head`, the search rows put their mass on the supports'
  last box-text tokens, which bind has filled with what the target looks like. It is the hop between bind and
  search: the answer must first fetch the target's appearance before it can look for it in the query. The read-out
  probe with boxed (two-object) supports learns nothing without this hop (docs/toy_ablation.md, section 4b).
  Data flow sets the order: `bind_layer < gather_layer < search_layer`.

The loss is `weight * mean over supervised rows of -log(mass)`, added to the LM loss. It is only used by the toy's
pretraining stage; the ablation's rows (SFT, the paper's attention loss, GRPO) train without it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from focuskit.core.box import Box
from focuskit.core.episode import Episode, ImageRef
from focuskit.core.errors import ConfigError
from focuskit.models.vlms.encoding import EncodedEpisode, image_token_runs
from focuskit.training.sft_data import collate_for_sft
from focuskit.training.sft_trainer import FocusSFTTrainer, split_masks

ROW_KEY, TARGET_KEY = "pointer_row_group", "pointer_target_group"
"""Batch tensors (B, L) int64: a supervised row's group (0: none; -1 search; j + 1 binding for support j) and the
group of the keys it should attend to (the same ids, and `BOUND` at the supports' last box-text tokens)."""
BOUND = -2
"""Target group of each support's last box-text token: the keys of the gather step."""


@dataclass(frozen=True)
class PointerConfig:
    """Where the supervision acts. Defaults: the read-out probe's layer 2 for search, one layer earlier for binding
    (the support prototype must be bound before the query can be searched for it)."""

    weight: float = 1.0
    """Multiplies the summed -log masses added to the LM loss."""
    search_layer: int = 2
    bind_layer: int = 1
    head: int = 0
    """The one head supervised in each of the two layers; the others stay free."""
    bind: bool = True
    """Also supervise box text -> support region (False: search only)."""
    gather_layer: int | None = None
    """Also supervise answer -> the supports' bound box-text tokens in this layer (None: no gather step)."""

    def __post_init__(self) -> None:
        if self.weight < 0 or min(self.search_layer, self.bind_layer, self.head) < 0:
            raise ConfigError(f"pointer supervision needs a weight >= 0 and layer/head indices >= 0, got {self}")
        ordered = self.gather_layer is None or (self.bind and self.bind_layer < self.gather_layer < self.search_layer)
        if not ordered:
            raise ConfigError(f"a gather step needs bind on and bind_layer < gather_layer < search_layer, got {self}")

    @property
    def deepest_layer(self) -> int:
        return max(self.search_layer, self.bind_layer, self.gather_layer or 0)


def covered_cells(box: Box, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(rows * cols,) bool, row-major: the merged-grid cells of an image that `box` (its pixels) overlaps."""
    width, height = image_size
    rows, cols = grid
    xs = torch.linspace(0, width, cols + 1)
    ys = torch.linspace(0, height, rows + 1)
    in_x = (xs[1:] > box.x1) & (xs[:-1] < box.x2)
    in_y = (ys[1:] > box.y1) & (ys[:-1] < box.y2)
    return (in_y[:, None] & in_x[None, :]).flatten()


def pointer_groups(
    episode: Episode,
    encoded: EncodedEpisode,
    image_token_id: int,
    merge: int,
    support_sizes: Sequence[tuple[int, int]],
    digit_ids: frozenset[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) row groups and (L,) target groups of one encoded training episode (see `ROW_KEY`).

    `digit_ids`: the tokenizer's ids whose text holds a digit (where the answer's first coordinate starts).
    """
    ids = encoded.inputs["input_ids"][0]
    length = ids.shape[0]
    rows = torch.zeros(length, dtype=torch.long)
    targets = torch.zeros(length, dtype=torch.long)
    runs = image_token_runs(ids, image_token_id)
    grids = encoded.inputs["image_grid_thw"]
    box_tokens = encoded.box_token_mask[0]

    def mark(run: tuple[int, int], grid_thw: torch.Tensor, box: Box, size: tuple[int, int], group: int) -> None:
        _, h, w = (int(v) for v in grid_thw)
        cells = covered_cells(box, size, (h // merge, w // merge))
        if cells.numel() != run[1] - run[0]:
            raise ValueError(f"episode {episode.id!r}: {run[1] - run[0]} image tokens for a {h}x{w} patch grid")
        targets[run[0] : run[1]][cells] = group

    for j, support in enumerate(episode.supports):
        mark(runs[j], grids[j], support.box, support_sizes[j], j + 1)
        span = torch.zeros(length, dtype=torch.bool)
        span[runs[j][1] : runs[j + 1][0]] = True
        last_box_token = int((span & box_tokens).nonzero().max())
        rows[last_box_token] = j + 1
        targets[last_box_token] = BOUND
    if episode.query_box is not None and encoded.labels is not None:
        mark(runs[-1], grids[-1], episode.query_box, encoded.query_image_size, -1)
        answer = (encoded.labels[0] != -100).nonzero().flatten().tolist()
        first_digit = next((p for p in answer if int(ids[p]) in digit_ids), None)
        if first_digit is not None:
            rows[answer[0] - 1 : first_digit] = -1  # the positions predicting answer[0] .. first_digit
    return rows, targets


def _image_size(image: ImageRef) -> tuple[int, int]:
    """(width, height) of an in-memory image, or of a file from its header (read once per path)."""
    return image.size if isinstance(image, Image.Image) else _file_image_size(str(image))


@functools.lru_cache(maxsize=65536)
def _file_image_size(path: str) -> tuple[int, int]:
    """A pool's frames recur across episodes, so each file's header is read once per process."""
    with Image.open(path) as im:
        return im.size


class PointerDataset(torch.utils.data.Dataset):
    """An `SFTDataset` whose items also carry the pointer groups."""

    def __init__(self, base: Any, image_token_id: int, merge: int) -> None:
        self.base, self.image_token_id, self.merge = base, image_token_id, merge
        self.episodes = base.episodes
        tokenizer = base.processor.tokenizer
        self.digit_ids = frozenset(
            i for tok, i in tokenizer.get_vocab().items() if any(c.isdigit() for c in tokenizer.decode([i]))
        )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[EncodedEpisode, torch.Tensor, torch.Tensor]:
        episode = self.episodes[index]
        encoded = self.base[index]
        sizes = [_image_size(s.image) for s in episode.supports]
        rows, targets = pointer_groups(episode, encoded, self.image_token_id, self.merge, sizes, self.digit_ids)
        return encoded, rows, targets


def collate_with_pointer(items: Sequence[tuple[EncodedEpisode, torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    batch = collate_for_sft([it[0] for it in items])
    length = batch["input_ids"].shape[1]
    for key, pos in ((ROW_KEY, 1), (TARGET_KEY, 2)):
        out = torch.zeros(len(items), length, dtype=torch.long)
        for b, it in enumerate(items):
            out[b, : it[pos].shape[0]] = it[pos]
        batch[key] = out
    return batch


def pointer_loss(
    attentions: Sequence[torch.Tensor], rows: torch.Tensor, targets: torch.Tensor, cfg: PointerConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean -log(attention mass on the row's targets) over supervised rows, and the mean masses (for the log)."""
    losses, logged = [], {}
    match = rows[:, :, None] == targets[:, None, :]
    parts = [("search", cfg.search_layer, rows < 0, match)]
    if cfg.bind:
        parts.append(("bind", cfg.bind_layer, rows > 0, match))
    if cfg.gather_layer is not None:
        parts.append(("gather", cfg.gather_layer, rows < 0, (targets == BOUND)[:, None, :].expand_as(match)))
    for name, layer, selected, keys in parts:
        if not selected.any():
            continue
        attn = attentions[layer][:, cfg.head].float()  # (B, L, L)
        same = keys & selected[:, :, None]
        mass = (attn * same).sum(-1)[selected]
        losses.append(-torch.log(mass + 1e-6).mean())
        logged[f"pointer_{name}_mass"] = float(mass.detach().mean())
    if not losses:
        return attentions[0].new_zeros(()), logged
    return torch.stack(losses).sum(), logged


class PointerSFTTrainer(FocusSFTTrainer):
    """`FocusSFTTrainer` plus the pointer supervision (eager attention; the paper's attention loss must be off)."""

    pointer: PointerConfig = PointerConfig()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if self._attention_active:
            raise ValueError("the toy's pointer stage does not combine with the paper's attention loss")
        inputs, _, _ = split_masks(inputs)
        rows, targets = inputs.pop(ROW_KEY), inputs.pop(TARGET_KEY)
        outputs = model(**inputs, output_attentions=True)
        extra, logged = pointer_loss(outputs.attentions, rows, targets, self.pointer)
        self._record(outputs.loss, None)
        metrics = self._metrics["train" if model.training else "eval"]
        for key, value in logged.items():
            metrics[key].append(value)
        loss = outputs.loss + self.pointer.weight * extra
        return (loss, outputs) if return_outputs else loss


def pointer_hooks(cfg: PointerConfig, model_dir: str) -> Any:
    """`SFTHooks` that train with the pointer supervision `cfg`.

    The checkpoint's config gives the depth and its processor the image token and merge size; its weights are not
    read here (the SFT run loads them).
    """
    from transformers import AutoConfig, AutoProcessor

    from focuskit.models.vlms import inspect_checkpoint
    from focuskit.models.vlms.families import family_spec
    from focuskit.training.run_sft import SFTHooks

    info = inspect_checkpoint(model_dir)
    depth = int(AutoConfig.from_pretrained(info.source).get_text_config().num_hidden_layers)
    if cfg.deepest_layer >= depth:
        raise ConfigError(f"pointer layer {cfg.deepest_layer} does not exist in a {depth}-layer model")
    processor = AutoProcessor.from_pretrained(info.source)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(family_spec(info.family).image_token)
    merge = int(getattr(processor.image_processor, "merge_size", 2) or 2)
    trainer = type("ConfiguredPointerTrainer", (PointerSFTTrainer,), {"pointer": cfg})
    return SFTHooks(
        trainer_class=trainer,
        wrap_dataset=lambda base: PointerDataset(base, image_token_id, merge),
        data_collator=collate_with_pointer,
        attn_implementation="eager",
    )
