"""`FocusSFTTrainer`: transformers' `Trainer` with FOCUS's loss, LM loss + lambda * bounding-box attention loss.

Only `compute_loss` and `log` are overridden; the training loop, gradient accumulation, checkpoints and resume,
mixed precision, `accelerate launch` and DeepSpeed all stay transformers'. Batches come from
`focuskit.training.sft_data.collate_for_sft`: the processor's tensors plus `labels`, `box_token_mask` (M) and
`query_image_mask` (Q). The two masks are taken out before the forward; the model never sees them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from focuskit.training.attention_loss import (
    COLLECTOR_KWARG,
    AttentionLossOutput,
    BoxAttentionCollector,
    eager_box_attention_loss,
)
from focuskit.training.sft_config import AttentionLossConfig

logger = logging.getLogger(__name__)

MASK_KEYS = ("box_token_mask", "query_image_mask")


def split_masks(inputs: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """(model inputs, box_token_mask, query_image_mask) of a `collate_for_sft` batch, which is left unchanged.

    The masks are ours, not the model's: a forward that received them would fail, so every trainer that extends
    `FocusSFTTrainer` takes them out here.
    """
    model_inputs = dict(inputs)
    box_mask, query_mask = (model_inputs.pop(key) for key in MASK_KEYS)
    return model_inputs, box_mask, query_mask


class FocusSFTTrainer(Trainer):
    """A `Trainer` whose loss adds the attention loss and which logs `lm_loss`, `attn_loss` and `attn_margin`.

    `attention_layers` are decoder-layer indices already checked against the model's depth (`select_layers`).
    The model must already use the matching attention implementation (`use_box_attention`).
    """

    loss_is_scaled_for_ga = False
    """Our loss is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps."""

    def __init__(
        self, *args: Any, attention_loss: AttentionLossConfig, attention_layers: Sequence[int], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.attention_loss = attention_loss
        self.attention_layers = tuple(attention_layers)
        self.attention_skipped = 0
        """Examples (since the start of this process) skipped by the attention loss for lack of box/query tokens."""
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    @property
    def _attention_active(self) -> bool:
        return self.attention_loss.enabled and self.attention_loss.weight > 0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs, box_mask, query_mask = split_masks(inputs)
        if "labels" not in inputs:
            raise ValueError("SFT batches need 'labels' (encode episodes with with_answer=True)")
        attention: AttentionLossOutput | None = None
        cfg = self.attention_loss
        if not self._attention_active:
            outputs = model(**inputs)
        elif cfg.implementation == "efficient":
            collector = BoxAttentionCollector.from_batch(
                query_mask, box_mask, inputs.get("attention_mask"), self.attention_layers
            )
            outputs = model(**inputs, **{COLLECTOR_KWARG: collector})
            attention = collector.loss(cfg.margin, normalization=cfg.normalization, squared=cfg.squared)
        else:
            outputs = model(**inputs, output_attentions=True)
            attention = eager_box_attention_loss(
                outputs.attentions,
                self.attention_layers,
                query_mask,
                box_mask,
                inputs.get("attention_mask"),
                cfg.margin,
                normalization=cfg.normalization,
                squared=cfg.squared,
            )
        lm_loss = outputs.loss
        loss = lm_loss if attention is None else lm_loss + cfg.weight * attention.loss
        self._record(lm_loss, attention)
        return (loss, outputs) if return_outputs else loss

    def _record(self, lm_loss: torch.Tensor, attention: AttentionLossOutput | None) -> None:
        """Average this batch's metrics over processes; every process makes the same collective calls.

        Under DDP each `gather` is a collective: a rank that skipped one (say, its batch had no usable episode for
        the attention loss while another rank's had) would wait forever in the next. So there is exactly one
        gather per batch whatever the batch held: the attention values are sent with a count of the examples
        behind them, and an average is taken only over the processes that had any.
        """
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if attention is None:
            metrics["lm_loss"].append(float(self._gather(lm_loss.detach().float().reshape(1)).mean()))
            return
        used = float(attention.examples_used)
        row = torch.stack(
            [
                lm_loss.detach().float().reshape(()),
                attention.loss.detach().float().reshape(()) * used,
                attention.mean_margin.detach().float().reshape(()) * used,
                lm_loss.new_tensor(used, dtype=torch.float32),
                lm_loss.new_tensor(float(attention.examples_skipped), dtype=torch.float32),
            ]
        )
        gathered = self._gather(row[None, :]).reshape(-1, 5)  # (processes, 5)
        metrics["lm_loss"].append(float(gathered[:, 0].mean()))
        total_used = float(gathered[:, 3].sum())
        if total_used > 0:
            metrics["attn_loss"].append(float(gathered[:, 1].sum()) / total_used)
            metrics["attn_margin"].append(float(gathered[:, 2].sum()) / total_used)
        if attention.examples_skipped:
            if self.attention_skipped == 0:
                logger.warning(
                    "attention loss: skipping %d example(s) in a batch with no support-box tokens or no query-image "
                    "tokens after them (they still get the LM loss); counts are logged as attn_skipped",
                    attention.examples_skipped,
                )
            self.attention_skipped += attention.examples_skipped
        metrics["attn_skipped"].append(float(gathered[:, 4].sum()))

    def _gather(self, value: torch.Tensor) -> torch.Tensor:
        """`accelerator.gather` (a collective under DDP): one call per batch, on every process."""
        return self.accelerator.gather(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averages of our metrics since the last log (`attn_skipped` is summed)."""
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        extra: dict[str, float] = {}
        for key, values in self._metrics[mode].items():
            if values:
                extra[prefix + key] = float(sum(values)) if key == "attn_skipped" else float(sum(values) / len(values))
        self._metrics[mode].clear()
        super().log({**logs, **extra}, start_time)
