"""FOCUS's bounding-box attention loss, computed without materializing attention maps.

The loss asks every query-image token (rows Q) to attend more, on average, to the support-box text tokens (mask M)
than to the other tokens it can see:

    diff_i = mean_{j in M} A_ij - mean_{j not in M, j visible from i} A_ij
    loss   = mean_{i in Q} max(0, margin - diff_i)

where A is attention averaged over heads and over the selected layers. "Visible" means the key is not padding and
does not come after the row (causal attention), so padding a batch or appending an answer never changes the loss.
Examples are weighted equally in a batch; an example with no box tokens (or no query tokens) is skipped and counted.

Two implementations give the same loss and gradients (tests check both):

* **efficient** (the default): a focuskit attention function registered with transformers' `AttentionInterface`
  produces the layer output with SDPA, and for the selected layers only computes, for the query rows only, the
  attention *mass* on M (a (batch, heads, rows) tensor). Because rows of softmax sum to 1 over visible keys, the mass
  alone gives both means. A custom autograd function recomputes the row softmax in backward in chunks of rows, so
  besides the gathered query rows it keeps nothing of size rows x keys alive between forward and backward.
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

ATTENTION_IMPLEMENTATION = "focuskit_box_attention"
"""Name the efficient attention function is registered under in transformers' `AttentionInterface`."""

COLLECTOR_KWARG = "focuskit_box_attention"
"""Keyword argument that carries a `BoxAttentionCollector` through the model's forward to the attention function."""

LayerSelection = Literal["first_k", "last_k", "all"]
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
    `visible` (B, N, Lk) bool: key j is visible from the row (non-padding and j <= row); padding rows see every key
    so that their (ignored) softmax stays finite. `box` (B, Lk) bool is M cut to the same Lk keys, where Lk is one
    past the last query row: no query row can see a later key.
    """

    index: torch.Tensor
    valid: torch.Tensor
    box_count: torch.Tensor
    other_count: torch.Tensor
    visible: torch.Tensor
    box: torch.Tensor

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
        batch, length = query_mask.shape
        per_example = query_mask.sum(dim=1)
        n_rows = max(int(per_example.max()) if batch else 0, 1)
        positions = torch.arange(length, device=device)
        # Stable sort puts each example's query positions first, in order; the tail is padding.
        order = torch.sort((~query_mask).to(torch.int8), dim=1, stable=True).indices[:, :n_rows]
        row_exists = torch.arange(n_rows, device=device)[None, :] < per_example[:, None]
        first = order[:, :1]
        index = torch.where(row_exists, order, first)
        box_seen = torch.cumsum(box_mask.long(), dim=1)
        valid_seen = torch.cumsum(key_valid.long(), dim=1)
        box_count = box_seen.gather(1, index).float()
        other_count = valid_seen.gather(1, index).float() - box_count
        valid = row_exists & (box_count > 0)
        keys = int(index.max()) + 1 if batch else 1
        causal = positions[None, None, :keys] <= index[:, :, None]
        visible = (causal & key_valid[:, None, :keys]) | ~row_exists[:, :, None]
        return cls(index, valid, box_count, other_count, visible, box_mask[:, :keys])


def reduce_hinge(diff: torch.Tensor, rows: QueryRows, margin: float) -> AttentionLossOutput:
    """Hinge over rows, mean per example, mean over usable examples. `diff` is (B, N) mean-to-M minus mean-to-not-M."""
    weight = rows.valid.to(diff.dtype)
    safe_diff = torch.where(rows.valid, diff, torch.zeros_like(diff))
    n_rows = weight.sum(dim=1).clamp(min=1.0)
    hinge = torch.relu(margin - safe_diff) * weight
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


def _row_probs(query_rows: torch.Tensor, key: torch.Tensor, visible: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax over visible keys for a chunk of rows: (B, Hkv, G, n, D) x (B, Hkv, Lk, D) -> (B, Hkv, G, n, Lk)."""
    logits = torch.matmul(query_rows, key[:, :, None].transpose(-1, -2)) * scaling
    logits = logits.masked_fill(~visible[:, None, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


class _BoxAttentionMass(torch.autograd.Function):
    """Attention mass on the box keys for gathered query rows, recomputing the softmax in backward.

    Forward: mass = sum_j p_j * box_j with p = softmax over visible keys. Backward uses d mass / d logit_j =
    p_j * (box_j - mass), so only the inputs and the (B, Hkv, G, N) output are kept between passes.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        query_rows: torch.Tensor,
        key: torch.Tensor,
        visible: torch.Tensor,
        box: torch.Tensor,
        scaling: float,
        chunk_rows: int,
    ) -> torch.Tensor:
        dtype = torch.promote_types(query_rows.dtype, torch.float32)
        q32, k32, boxf = query_rows.to(dtype), key.to(dtype), box.to(dtype)[:, None, None, None, :]
        n = q32.shape[3]
        mass = q32.new_empty(q32.shape[:4])
        for s in range(0, n, chunk_rows):
            p = _row_probs(q32[:, :, :, s : s + chunk_rows], k32, visible[:, s : s + chunk_rows], scaling)
            mass[:, :, :, s : s + chunk_rows] = (p * boxf).sum(dim=-1)
        ctx.save_for_backward(query_rows, key, visible, box, mass)
        ctx.scaling = scaling
        ctx.chunk_rows = chunk_rows
        return mass

    @staticmethod
    def backward(ctx: Any, grad_mass: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        query_rows, key, visible, box, mass = ctx.saved_tensors
        scaling, chunk_rows = ctx.scaling, ctx.chunk_rows
        q32, k32, boxf = query_rows.to(mass.dtype), key.to(mass.dtype), box.to(mass.dtype)[:, None, None, None, :]
        grad_q = torch.zeros_like(q32)
        grad_k = torch.zeros_like(k32)
        n = q32.shape[3]
        for s in range(0, n, chunk_rows):
            sl = slice(s, s + chunk_rows)
            p = _row_probs(q32[:, :, :, sl], k32, visible[:, sl], scaling)
            grad_logits = p * (boxf - mass[:, :, :, sl, None]) * (grad_mass[:, :, :, sl, None] * scaling)
            grad_q[:, :, :, sl] = torch.matmul(grad_logits, k32[:, :, None])
            grad_k += torch.einsum("bhgnl,bhgnd->bhld", grad_logits, q32[:, :, :, sl])
        return grad_q.to(query_rows.dtype), grad_k.to(key.dtype), None, None, None, None


def box_attention_mass(
    query_rows: torch.Tensor,
    key: torch.Tensor,
    visible: torch.Tensor,
    box: torch.Tensor,
    scaling: float,
    chunk_rows: int = 128,
) -> torch.Tensor:
    """Softmax attention mass on box keys for gathered query rows, differentiable w.r.t. rows and keys.

    `query_rows` (B, Hkv, G, N, D): the rows' queries grouped by key-value head (G query heads share one key head);
    `key` (B, Hkv, Lk, D); `visible` (B, N, Lk) bool, every row must see at least one key; `box` (B, Lk) bool.
    Returns (B, Hkv, G, N) in float32 (float64 for float64 inputs).
    """
    return _BoxAttentionMass.apply(query_rows, key, visible, box, scaling, chunk_rows)


class BoxAttentionCollector:
    """Per-forward state of the efficient loss: which rows and keys, and the head-averaged mass per selected layer.

    Create one per batch, pass it to the model as `**{COLLECTOR_KWARG: collector}`, then call `loss(margin)`.
    After `loss` the collector stops recording, so a gradient-checkpointing recompute in backward (which calls the
    attention function again) computes the same graph without adding entries.
    """

    def __init__(
        self,
        rows: QueryRows,
        layers: Sequence[int],
        *,
        chunk_rows: int = 128,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.rows = rows
        self.layers = frozenset(layers)
        self.chunk_rows = chunk_rows
        self.recording = True
        self._mass: dict[int, torch.Tensor] = {}

    @classmethod
    def from_batch(
        cls,
        query_mask: torch.Tensor,
        box_mask: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layers: Sequence[int],
        *,
        chunk_rows: int = 128,
    ) -> BoxAttentionCollector:
        return cls(QueryRows.from_masks(query_mask, box_mask, attention_mask), layers, chunk_rows=chunk_rows)

    def observe(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """Called by the attention function with (B, H, L, D) queries and (B, Hkv, L, D) keys after RoPE."""
        layer = getattr(module, "layer_idx", None)
        if layer not in self.layers:
            return
        rows = self.rows
        batch, heads, length, dim = query.shape
        kv_heads = key.shape[1]
        if length < rows.visible.shape[-1] or key.shape[2] != length:
            raise ModelError(
                f"box attention loss expects a full training forward (queries = keys = sequence); layer {layer} got "
                f"{length} queries and {key.shape[2]} keys for masks over {rows.visible.shape[-1]}+ tokens"
            )
        n = rows.index.shape[1]
        keys = rows.visible.shape[-1]
        gather_index = rows.index[:, None, :, None].expand(batch, heads, n, dim)
        query_rows = query.gather(2, gather_index).view(batch, kv_heads, heads // kv_heads, n, dim)
        mass = box_attention_mass(query_rows, key[:, :, :keys], rows.visible, rows.box, float(scaling), self.chunk_rows)
        if self.recording:
            self._mass[layer] = mass.mean(dim=(1, 2))

    def loss(self, margin: float) -> AttentionLossOutput:
        """Reduce the recorded masses into the hinge loss; stop recording."""
        self.recording = False
        missing = sorted(self.layers - set(self._mass))
        if missing:
            raise ModelError(
                f"box attention statistics were not recorded for layer(s) {missing}: the model is not using the "
                f"{ATTENTION_IMPLEMENTATION!r} attention function (call use_box_attention(model, 'efficient'))"
            )
        mass = torch.stack([self._mass[i] for i in sorted(self.layers)]).mean(dim=0)
        self._mass.clear()
        rows = self.rows
        mean_box = mass / rows.box_count.clamp(min=1.0)
        mean_other = (1.0 - mass) / rows.other_count.clamp(min=1.0)
        return reduce_hinge(mean_box - mean_other, rows, margin)


def eager_box_attention_loss(
    attentions: Sequence[torch.Tensor],
    layers: Sequence[int],
    query_mask: torch.Tensor,
    box_mask: torch.Tensor,
    attention_mask: torch.Tensor | None,
    margin: float,
) -> AttentionLossOutput:
    """Reference: the loss from full (B, H, L, L) attention maps (`output_attentions=True` with eager attention).

    Means are taken explicitly over visible M and visible not-M keys, independently of the efficient path's
    "rows sum to one" shortcut, so agreement between the two is a real check.
    """
    if not attentions or any(a is None for a in attentions):
        raise ModelError("the eager attention loss needs attention maps: run the model with eager attention")
    if max(layers) >= len(attentions):
        raise ModelError(f"attention loss layer {max(layers)} requested but the model returned {len(attentions)}")
    rows = QueryRows.from_masks(query_mask, box_mask, attention_mask)
    mean_attn = torch.stack([attentions[i] for i in layers]).float().mean(dim=(0, 2))  # (B, L, L)
    keys = rows.visible.shape[-1]
    a = mean_attn.gather(1, rows.index[:, :, None].expand(-1, -1, mean_attn.shape[-1]))[..., :keys]  # (B, N, Lk)
    visible_box = rows.visible & rows.box[:, None, :]
    visible_other = rows.visible & ~rows.box[:, None, :]
    mean_box = (a * visible_box).sum(-1) / visible_box.sum(-1).clamp(min=1)
    mean_other = (a * visible_other).sum(-1) / visible_other.sum(-1).clamp(min=1)
    return reduce_hinge(mean_box - mean_other, rows, margin)


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
    """The registered attention function: SDPA for the output, plus row statistics when a collector rides along."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    collector: BoxAttentionCollector | None = kwargs.pop(COLLECTOR_KWARG, None)
    if kwargs.get("sliding_window") is not None:
        raise ModelError("the box attention loss does not support sliding-window attention layers")
    output, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    if collector is not None:
        collector.observe(module, query, key, scaling if scaling is not None else query.shape[-1] ** -0.5)
    return output, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, box_attention_forward)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def _base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def text_config(model: nn.Module) -> Any:
    """The language model's config (the `text_config` of a VLM, or the config of a text-only model)."""
    config = _base_model(model).config
    return getattr(config, "text_config", None) or config


def num_decoder_layers(model: nn.Module) -> int:
    layers = getattr(text_config(model), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ModelError(f"cannot tell how many decoder layers {type(_base_model(model)).__name__} has")
    return layers


def use_box_attention(model: nn.Module, implementation: Implementation) -> None:
    """Switch the language model's attention so the loss can be computed; the vision tower keeps its own.

    `efficient` registers focuskit's attention function (once; it is process-global in transformers) and selects
    it; `eager` selects transformers' eager attention, which returns the full maps.
    """
    base = _base_model(model)
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
    base = _base_model(model)
    if "text_config" in getattr(base.config, "sub_configs", {}):
        base.set_attn_implementation({"text_config": implementation})
    else:
        base.set_attn_implementation(implementation)
