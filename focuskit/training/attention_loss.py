"""FOCUS's bounding-box attention loss, computed without materializing attention maps.

The loss asks every query-image token (rows Q) to attend more, on average, to the support-box text tokens (mask M)
than to the other tokens it can see:

    diff_i = mean_{j in M} A_ij - mean_{j not in M, j visible from i} A_ij      (normalization "mean", Eq. 7)
    diff_i =  sum_{j in M} A_ij -  sum_{j not in M, j visible from i} A_ij      (normalization "mass")
    loss   = mean_{i in Q} max(0, margin - diff_i)^2                           (Eq. 9; squared=False: no square)

where A is attention averaged over heads and over the selected layers. "Visible" means the key is not padding and
does not come after the row (causal attention), so padding a batch or appending an answer never changes the loss.
Examples are weighted equally in a batch; an example with no box tokens (or no query tokens) is skipped and counted.

Two implementations give the same loss and gradients (tests check both):

* **efficient** (the default): a focuskit attention function registered with transformers' `AttentionInterface`.
  Every layer's output comes from SDPA as usual. In the selected layers one more SDPA call runs over the query rows
  only (N of the L rows), with the box indicator as values: its output is sum_j A_ij [j in M], the attention *mass*
  on M of each query row, under the same causal and padding mask. Rows of softmax sum to 1 over visible keys, so
  the mass alone gives both means. The call uses the same fused kernels as the layer, so no attention map is ever
  materialized; gradients come from SDPA's own backward. Extra memory: the gathered query rows and their output
  (2 x N/L of one query tensor per selected layer) plus one shared (rows x keys) additive mask per batch; extra
  compute: about 2N/L of a selected layer's causal attention (the query rows come last and see almost every key).
* **eager**: the model runs with eager attention and `output_attentions=True`, and the loss is read off the full
  (batch, heads, L, L) maps of every layer. This is what the paper did (+12% memory); it is kept as the reference.

The attention function is module-global state in transformers, so nothing is registered at import: `use_box_attention`
registers it (idempotently, under a focuskit-specific name) when a trainer asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms.generation import base_model, text_config

ATTENTION_IMPLEMENTATION = "focuskit_box_attention"
"""Name the efficient attention function is registered under in transformers' `AttentionInterface`."""

COLLECTOR_KWARG = "focuskit_box_attention"
"""Keyword argument that carries a `BoxAttentionCollector` through the model's forward to the attention function."""

LayerSelection = Literal["first_k", "last_k", "all"]
Normalization = Literal["mean", "mass"]
Implementation = Literal["efficient", "eager"]


def select_layers(selection: LayerSelection, k: int, num_layers: int) -> tuple[int, ...]:
    """Indices of the decoder layers whose attention the loss averages.

    Raises `ConfigError` when `k` asks for more layers than the model has, naming both numbers.
    """
    if num_layers < 1:
        raise ModelError(f"the language model reports {num_layers} decoder layers; the attention loss needs >= 1")
    if selection == "all":
        return tuple(range(num_layers))
    if selection not in ("first_k", "last_k"):
        raise ConfigError(f"attention_loss.layers must be one of first_k, last_k, all; got {selection!r}")
    if k < 1:
        raise ConfigError(f"attention_loss.k must be >= 1, got {k}")
    if k > num_layers:
        raise ConfigError(
            f"attention_loss.k = {k} selects more layers than the model's {num_layers} decoder layers; "
            f"set attention_loss.k <= {num_layers} or attention_loss.layers=all"
        )
    return tuple(range(k)) if selection == "first_k" else tuple(range(num_layers - k, num_layers))


@dataclass(frozen=True)
class AttentionLossOutput:
    """The loss and what the trainer logs about it."""

    loss: torch.Tensor
    """Scalar, differentiable; 0 when every example in the batch was skipped."""
    mean_margin: torch.Tensor
    """Scalar, detached: mean over used examples of the mean over rows of (mean attention to M - to not-M)."""
    examples_used: int
    examples_skipped: int
    """Examples without box tokens, without query tokens, or whose query comes before every box token."""


@dataclass(frozen=True)
class QueryRows:
    """The query rows of a batch, gathered into a padded (B, N) layout, and the key counts each row sees.

    `index` (B, N) long: sequence position of each query row (padding rows repeat a valid position).
    `valid` (B, N) bool: the row is a real query token that sees at least one box token.
    `box_count` / `other_count` (B, N) float: visible keys in M / not in M for each row.
    `box` / `key_valid` (B, L) bool: the box tokens and the non-padding tokens.
    """

    index: torch.Tensor
    valid: torch.Tensor
    box_count: torch.Tensor
    other_count: torch.Tensor
    box: torch.Tensor
    key_valid: torch.Tensor
    query_count: torch.Tensor
    """(B,) long: query rows per example (the rest of each row of `index` is padding)."""

    @property
    def usable(self) -> torch.Tensor:
        """(B,) bool: examples that contribute to the loss."""
        return self.valid.any(dim=1)

    @classmethod
    def from_masks(
        cls, query_mask: torch.Tensor, box_mask: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> QueryRows:
        """Build from (B, L) masks: query-image tokens, support-box tokens, and non-padding tokens."""
        if query_mask.dim() != 2 or query_mask.shape != box_mask.shape:
            raise ValueError(
                f"query_image_mask and box_token_mask must both be (batch, length); got {tuple(query_mask.shape)} "
                f"and {tuple(box_mask.shape)}"
            )
        query_mask = query_mask.bool()
        box_mask = box_mask.bool()
        key_valid = torch.ones_like(query_mask) if attention_mask is None else attention_mask.bool()
        if key_valid.shape != query_mask.shape:
            raise ValueError(
                f"attention_mask {tuple(key_valid.shape)} does not match the token masks {tuple(query_mask.shape)}"
            )
        if (query_mask & box_mask).any():
            raise ValueError("a token is marked both as a query-image token and as a support-box token")
        query_mask = query_mask & key_valid
        box_mask = box_mask & key_valid
        device = query_mask.device
        per_example = query_mask.sum(dim=1)
        n_rows = max(int(per_example.max()) if query_mask.shape[0] else 0, 1)
        # Stable sort puts each example's query positions first, in order; the tail is padding.
        order = torch.sort((~query_mask).to(torch.int8), dim=1, stable=True).indices[:, :n_rows]
        row_exists = torch.arange(n_rows, device=device)[None, :] < per_example[:, None]
        index = torch.where(row_exists, order, order[:, :1])
        box_count = torch.cumsum(box_mask.long(), dim=1).gather(1, index).float()
        other_count = torch.cumsum(key_valid.long(), dim=1).gather(1, index).float() - box_count
        valid = row_exists & (box_count > 0)
        return cls(index, valid, box_count, other_count, box_mask, key_valid, per_example)

    def visible(self) -> torch.Tensor:
        """(B, N, L) bool: key j is visible from row i (non-padding and j <= position of i)."""
        positions = torch.arange(self.box.shape[1], device=self.box.device)
        return (positions[None, None, :] <= self.index[:, :, None]) & self.key_valid[:, None, :]


def reduce_hinge(diff: torch.Tensor, rows: QueryRows, margin: float, *, squared: bool = False) -> AttentionLossOutput:
    """Hinge over rows, mean per example, mean over usable examples. `diff` is (B, N): d_i of each query row."""
    weight = rows.valid.to(diff.dtype)
    safe_diff = torch.where(rows.valid, diff, torch.zeros_like(diff))
    n_rows = weight.sum(dim=1).clamp(min=1.0)
    hinge = torch.relu(margin - safe_diff)
    hinge = (hinge.square() if squared else hinge) * weight
    per_example_loss = hinge.sum(dim=1) / n_rows
    per_example_margin = (safe_diff * weight).sum(dim=1) / n_rows
    usable = rows.usable
    used = int(usable.sum())
    skipped = int(usable.numel()) - used
    if used == 0:
        zero = diff.new_zeros(())
        return AttentionLossOutput(zero, zero.detach(), 0, skipped)
    loss = per_example_loss[usable].mean()
    margin_mean = per_example_margin[usable].mean().detach()
    return AttentionLossOutput(loss, margin_mean, used, skipped)


def _masked_gqa_is_fused(query: torch.Tensor) -> bool:
    """Whether SDPA runs `enable_gqa=True` with a mask in a fused kernel (CPU yes; CUDA falls back to math)."""
    return not query.is_cuda


class BoxAttentionCollector:
    """Per-forward state of the efficient loss: the batch's rows and box tokens, and each selected layer's mass.

    Create one per batch, pass it to the model as `**{COLLECTOR_KWARG: collector}`, then call `loss(margin)`.
    After `loss` the collector stops recording, so a gradient-checkpointing recompute in backward (which calls the
    attention function again, with the same collector) rebuilds the same graph without adding entries.
    """

    def __init__(self, rows: QueryRows, layers: Sequence[int]) -> None:
        self.rows = rows
        self.layers = frozenset(layers)
        self.recording = True
        self._mass: dict[int, torch.Tensor] = {}
        self._cache: dict[tuple[Any, ...], torch.Tensor] = {}

    @classmethod
    def from_batch(
        cls,
        query_mask: torch.Tensor,
        box_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layers: Sequence[int],
    ) -> BoxAttentionCollector:
        return cls(QueryRows.from_masks(query_mask, box_mask, attention_mask), layers)

    def wants(self, module: nn.Module) -> bool:
        return getattr(module, "layer_idx", None) in self.layers

    def _row_bias(self, groups: int, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, groups*N, L) additive mask (0 or -inf): what each gathered query row may attend to.

        Rows that do not exist (an example with fewer query tokens) see every key, so their ignored softmax stays
        finite. Built once per batch and shared by the selected layers, so SDPA's saved copy is stored once.
        """
        cache_key = (groups, dtype)
        if cache_key not in self._cache:
            rows = self.rows
            exists = torch.arange(rows.index.shape[1], device=rows.index.device)[None, :] < rows.query_count[:, None]
            visible = rows.visible() | ~exists[:, :, None]
            bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))
            self._cache[cache_key] = bias.repeat(1, groups, 1)[:, None]
        return self._cache[cache_key]

    def _box_values(self, key: torch.Tensor) -> torch.Tensor:
        """(B, Hkv, L, D): the box indicator in every channel (fused kernels want values as wide as the keys)."""
        cache_key = ("values", *key.shape, key.dtype)
        if cache_key not in self._cache:
            box = self.rows.box.to(key.dtype)[:, None, :, None]
            self._cache[cache_key] = box.expand(key.shape).contiguous()
        return self._cache[cache_key]

    def observe(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """Attention mass on the box tokens for the query rows, from one extra SDPA call over those rows only.

        `query` (B, H, L, D) and `key` (B, Hkv, L, D) are the layer's, after RoPE. With the box indicator as values
        the SDPA output is sum_j A_ij [j in M] for every row i, computed by the same fused kernels as the layer
        (no attention map is kept), over N query rows instead of L: about 2N/L of the layer's causal attention. Keys
        are never repeated for grouped-query attention: on CPU SDPA's `enable_gqa` takes a mask; on GPUs, where
        masked GQA would fall back to the unfused kernel, query heads are grouped under their key head instead.
        """
        rows = self.rows
        batch, heads, length, dim = query.shape
        kv_heads = key.shape[1]
        if length != rows.box.shape[1] or key.shape[2] != length or batch != rows.box.shape[0]:
            raise ModelError(
                "box attention loss expects a full training forward over the batch's tokens: got "
                f"{length} queries and {key.shape[2]} keys for token masks of shape {tuple(rows.box.shape)}"
            )
        groups = heads // kv_heads
        n = rows.index.shape[1]
        query_rows = query.gather(2, rows.index[:, None, :, None].expand(batch, heads, n, dim))
        values = self._box_values(key)
        if groups > 1 and _masked_gqa_is_fused(query):
            bias = self._row_bias(1, query.dtype)
            out = nn.functional.scaled_dot_product_attention(
                query_rows, key, values, attn_mask=bias, scale=scaling, enable_gqa=True
            )
        else:
            bias = self._row_bias(groups, query.dtype)
            grouped = query_rows.reshape(batch, kv_heads, groups * n, dim)
            out = nn.functional.scaled_dot_product_attention(grouped, key, values, attn_mask=bias, scale=scaling)
        if self.recording:
            mass = out[..., 0].float().reshape(batch, heads, n).mean(dim=1)
            self._mass[module.layer_idx] = mass  # type: ignore[index]

    def loss(
        self, margin: float, *, normalization: Normalization = "mean", squared: bool = False
    ) -> AttentionLossOutput:
        """Reduce the recorded masses into the hinge loss; stop recording."""
        self.recording = False
        missing = sorted(self.layers - set(self._mass))
        if missing:
            raise ModelError(
                f"box attention statistics were not recorded for layer(s) {missing}: the model is not using the "
                f"{ATTENTION_IMPLEMENTATION!r} attention function (call use_box_attention(model, 'efficient'))"
            )
        row_mass = torch.stack([self._mass[i] for i in sorted(self.layers)]).mean(dim=0)  # (B, N)
        self._mass.clear()
        rows = self.rows
        # Rows of softmax sum to one over the visible keys, so the mass on M alone gives both sides.
        if normalization == "mass":
            diff = row_mass - (1.0 - row_mass)
        elif normalization == "mean":
            diff = row_mass / rows.box_count.clamp(min=1.0) - (1.0 - row_mass) / rows.other_count.clamp(min=1.0)
        else:
            raise ConfigError(f"attention_loss.normalization must be mean or mass, got {normalization!r}")
        return reduce_hinge(diff, rows, margin, squared=squared)


def eager_box_attention_loss(
    attentions: Sequence[torch.Tensor],
    layers: Sequence[int],
    query_mask: torch.Tensor,
    box_mask: torch.Tensor,
    attention_mask: torch.Tensor | None,
    margin: float,
    *,
    normalization: Normalization = "mean",
    squared: bool = False,
) -> AttentionLossOutput:
    """Reference: the loss from full (B, H, L, L) attention maps (`output_attentions=True` with eager attention).

    Sums and means are taken explicitly over visible M and visible not-M keys, independently of the efficient
    path's "rows sum to one" shortcut, so agreement between the two is a real check.
    """
    if not attentions or any(a is None for a in attentions):
        raise ModelError("the eager attention loss needs attention maps: run the model with eager attention")
    if max(layers) >= len(attentions):
        raise ModelError(f"attention loss layer {max(layers)} requested but the model returned {len(attentions)}")
    rows = QueryRows.from_masks(query_mask, box_mask, attention_mask)
    mean_attn = torch.stack([attentions[i] for i in layers]).float().mean(dim=(0, 2))  # (B, L, L)
    a = mean_attn.gather(1, rows.index[:, :, None].expand(-1, -1, mean_attn.shape[-1]))  # (B, N, L)
    visible = rows.visible()
    visible_box = visible & rows.box[:, None, :]
    visible_other = visible & ~rows.box[:, None, :]
    mass_box = (a * visible_box).sum(-1)
    mass_other = (a * visible_other).sum(-1)
    if normalization == "mass":
        diff = mass_box - mass_other
    elif normalization == "mean":
        diff = mass_box / visible_box.sum(-1).clamp(min=1) - mass_other / visible_other.sum(-1).clamp(min=1)
    else:
        raise ConfigError(f"attention_loss.normalization must be mean or mass, got {normalization!r}")
    return reduce_hinge(diff, rows, margin, squared=squared)


def box_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The registered attention function: SDPA for the output, plus the box-mass statistic in the selected layers.

    Shapes as in transformers: query (B, H, L, D), key and value (B, Hkv, L, D); returns (B, L, H, D).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    collector: BoxAttentionCollector | None = kwargs.pop(COLLECTOR_KWARG, None)
    if kwargs.get("sliding_window") is not None:
        raise ModelError("the box attention loss does not support sliding-window attention layers")
    output = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    if collector is not None and collector.wants(module):
        collector.observe(module, query, key, query.shape[-1] ** -0.5 if scaling is None else scaling)
    return output


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, box_attention_forward)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def num_decoder_layers(model: nn.Module) -> int:
    layers = getattr(text_config(model), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ModelError(f"cannot tell how many decoder layers {type(base_model(model)).__name__} has")
    return layers


def use_box_attention(model: nn.Module, implementation: Implementation) -> None:
    """Switch the language model's attention so the loss can be computed; the vision tower keeps its own.

    `efficient` registers focuskit's attention function (once; it is process-global in transformers) and selects
    it; `eager` selects transformers' eager attention, which returns the full maps.
    """
    base = base_model(model)
    if implementation == "efficient":
        _register()
        name = ATTENTION_IMPLEMENTATION
    elif implementation == "eager":
        name = "eager"
    else:
        raise ConfigError(f"attention_loss.implementation must be efficient or eager, got {implementation!r}")
    set_impl = getattr(base, "set_attn_implementation", None)
    if not callable(set_impl):
        raise ModelError(f"{type(base).__name__} cannot switch its attention implementation")
    if "text_config" in getattr(base.config, "sub_configs", {}):
        set_impl({"text_config": name})
    else:
        set_impl(name)


def restore_attention(model: nn.Module, implementation: str = "sdpa") -> None:
    """Put the language model back on a standard implementation (before saving, so configs never name ours)."""
    base = base_model(model)
    if "text_config" in getattr(base.config, "sub_configs", {}):
        base.set_attn_implementation({"text_config": implementation})
    else:
        base.set_attn_implementation(implementation)
