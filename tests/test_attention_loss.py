"""The bounding-box attention loss: efficient and eager paths agree (loss and gradients), and the loss means what the
paper says on hand-made attention maps, with padding and box-less examples."""

from __future__ import annotations

import subprocess
import sys
from contextlib import nullcontext as does_not_raise

import pytest
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers import logging as hf_logging

from focuskit.core.errors import ConfigError, ModelError
from focuskit.training import attention_loss
from focuskit.training.attention_loss import (
    ATTENTION_IMPLEMENTATION,
    COLLECTOR_KWARG,
    BoxAttentionCollector,
    QueryRows,
    eager_box_attention_loss,
    num_decoder_layers,
    restore_attention,
    select_layers,
    use_box_attention,
)

VOCAB = 300
LENGTH = 48


def tiny_qwen2vl(layers: int = 6, kv_heads: int = 2, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """A 6-layer Qwen2-VL with grouped-query attention (4 query heads over 2 key-value heads), random weights."""
    hf_logging.set_verbosity_error()
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": VOCAB,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2},
        image_token_id=VOCAB - 1,
        video_token_id=VOCAB - 2,
        vision_start_token_id=VOCAB - 3,
        vision_end_token_id=VOCAB - 4,
    )
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config).eval()


def synthetic_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three sequences: one plain, one left-padded by 5, one without box tokens (must be skipped, never NaN)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB - 10, (3, LENGTH), generator=gen)
    attention_mask = torch.ones(3, LENGTH, dtype=torch.long)
    attention_mask[1, :5] = 0
    box = torch.zeros(3, LENGTH, dtype=torch.bool)
    box[:, 8:12] = True
    box[:, 20:23] = True
    box[2] = False
    query = torch.zeros(3, LENGTH, dtype=torch.bool)
    query[:, 26:38] = True
    query[0, 40] = True  # a ragged number of query rows per example
    return {"input_ids": ids, "attention_mask": attention_mask, "box_token_mask": box, "query_image_mask": query}


def efficient_loss(model, batch, layers, margin, **options):
    use_box_attention(model, "efficient")
    collector = BoxAttentionCollector.from_batch(
        batch["query_image_mask"], batch["box_token_mask"], batch["attention_mask"], layers
    )
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **{COLLECTOR_KWARG: collector})
    return collector.loss(margin, **options)


def eager_loss(model, batch, layers, margin, **options):
    use_box_attention(model, "eager")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return eager_box_attention_loss(
        out.attentions,
        layers,
        batch["query_image_mask"],
        batch["box_token_mask"],
        batch["attention_mask"],
        margin,
        **options,
    )


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("selection", "k", "depth", "expected", "expectation"),
    [
        ("first_k", 5, 28, (0, 1, 2, 3, 4), does_not_raise()),
        ("last_k", 2, 6, (4, 5), does_not_raise()),
        ("all", 5, 3, (0, 1, 2), does_not_raise()),
        ("first_k", 6, 6, (0, 1, 2, 3, 4, 5), does_not_raise()),
        ("first_k", 7, 6, None, pytest.raises(ConfigError, match=r"k = 7 .* 6 decoder layers")),
        ("last_k", 0, 6, None, pytest.raises(ConfigError, match="k must be >= 1")),
    ],
)
def test_select_layers(selection, k, depth, expected, expectation):
    with expectation:
        assert select_layers(selection, k, depth) == expected


@pytest.mark.parametrize(
    ("selection", "k", "kv_heads", "options"),
    [
        ("first_k", 3, 2, {}),
        ("last_k", 2, 4, {}),
        ("all", 1, 1, {}),
        ("first_k", 3, 2, {"normalization": "mass", "squared": True}),
        ("last_k", 2, 4, {"normalization": "mean", "squared": True}),
    ],
)
def test_efficient_and_eager_agree_on_loss_and_gradients(selection, k, kv_heads, options):
    model = tiny_qwen2vl(kv_heads=kv_heads)
    layers = select_layers(selection, k, num_decoder_layers(model))
    batch = synthetic_batch()
    fast = efficient_loss(model, batch, layers, margin=0.5, **options)
    slow = eager_loss(model, batch, layers, margin=0.5, **options)
    assert torch.isfinite(fast.loss)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.mean_margin, slow.mean_margin, rtol=1e-4, atol=1e-8)
    assert (fast.examples_used, fast.examples_skipped) == (slow.examples_used, slow.examples_skipped) == (2, 1)
    g_fast, g_slow = grads_of(model, fast.loss), grads_of(model, slow.loss)
    assert any(name.endswith("q_proj.weight") and g.abs().max() > 0 for name, g in g_slow.items())
    scale = max(g.abs().max() for g in g_slow.values())
    for name in g_fast.keys() | g_slow.keys():  # a parameter without a gradient on one side must get zero on the other
        reference = g_slow.get(name, torch.zeros_like(g_fast.get(name, torch.zeros(()))))
        torch.testing.assert_close(g_fast.get(name, torch.zeros_like(reference)), reference, rtol=1e-4,
                                   atol=1e-5 * scale, msg=name)  # fmt: skip


def test_grouped_query_path_agrees(monkeypatch):
    """The GPU path (query heads grouped under their key head, no enable_gqa) gives the same loss and gradients."""
    model = tiny_qwen2vl(kv_heads=2)
    batch = synthetic_batch()
    native = efficient_loss(model, batch, (0, 1), margin=0.5)
    g_native = grads_of(model, native.loss)
    monkeypatch.setattr(attention_loss, "_masked_gqa_is_fused", lambda query: False)
    grouped = efficient_loss(model, batch, (0, 1), margin=0.5)
    g_grouped = grads_of(model, grouped.loss)
    torch.testing.assert_close(grouped.loss, native.loss)
    for name in g_native:
        torch.testing.assert_close(g_grouped[name], g_native[name], rtol=1e-4, atol=1e-9, msg=name)


def test_loss_reaches_only_the_selected_layers():
    model = tiny_qwen2vl()
    layers = select_layers("first_k", 2, 6)
    grads = grads_of(model, efficient_loss(model, synthetic_batch(), layers, margin=0.5).loss)
    touched = {int(n.split("layers.")[1].split(".")[0]) for n in grads if "language_model.layers." in n}
    assert touched == {0, 1}  # later layers cannot influence the first two layers' attention


def test_padding_does_not_change_the_loss():
    """A batch of two equals the mean of the two examples run alone (equal weight per example)."""
    model = tiny_qwen2vl()
    layers = (0, 1, 2)
    batch = synthetic_batch()
    pair = {key: value[:2] for key, value in batch.items()}
    together = efficient_loss(model, pair, layers, margin=0.5)
    alone = []
    for i, start in ((0, 0), (1, 5)):  # example 1 without its 5 padding tokens
        single = {key: value[i : i + 1, start:] for key, value in batch.items()}
        alone.append(efficient_loss(model, single, layers, margin=0.5).loss)
    torch.testing.assert_close(together.loss, (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-7)


def test_batch_without_box_tokens_is_skipped_not_nan():
    model = tiny_qwen2vl()
    batch = synthetic_batch()
    batch["box_token_mask"] = torch.zeros_like(batch["box_token_mask"])
    for result in (efficient_loss(model, batch, (0,), 0.5), eager_loss(model, batch, (0,), 0.5)):
        assert result.examples_skipped == 3 and result.examples_used == 0
        assert result.loss.item() == 0.0 and torch.isfinite(result.mean_margin)


def test_gradient_checkpointing_keeps_the_attention_gradient():
    """Checkpointing recomputes the attention function in backward; the loss and gradients must not change."""
    model = tiny_qwen2vl().train()
    batch = synthetic_batch()
    plain = efficient_loss(model, batch, (0, 1), margin=0.5)
    g_plain = grads_of(model, plain.loss)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ckpt = efficient_loss(model, batch, (0, 1), margin=0.5)
    g_ckpt = grads_of(model, ckpt.loss)
    torch.testing.assert_close(plain.loss, ckpt.loss)
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], rtol=1e-4, atol=1e-9, msg=name)


def test_loss_matches_the_definition_on_hand_made_attention():
    """Row i sees keys 0..i; M = {1, 2}. Mean to M minus mean to the other visible keys, hinged at the margin."""
    length = 6
    box = torch.tensor([[False, True, True, False, False, False]])
    query = torch.tensor([[False, False, False, False, True, True]])
    attn = torch.zeros(1, 1, length, length)
    attn[0, 0, 4, :5] = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1])  # M mean 0.3, others (0.1+0.2+0.1)/3
    attn[0, 0, 5, :6] = torch.tensor([0.5, 0.05, 0.05, 0.1, 0.1, 0.2])  # M mean 0.05, others 0.9/4
    diffs = torch.tensor([0.3 - 0.4 / 3, 0.05 - 0.9 / 4])
    margin = 0.1
    expected = torch.relu(margin - diffs).mean()
    result = eager_box_attention_loss([attn], (0,), query, box, None, margin)
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(result.mean_margin, diffs.mean())
    # A left-padded copy (padding keys get no attention) gives the same numbers.
    padded = torch.zeros(1, 1, length + 2, length + 2)
    padded[0, 0, 2:, 2:] = attn[0, 0]
    pad = torch.tensor([[False, False]])
    result_padded = eager_box_attention_loss(
        [padded],
        (0,),
        torch.cat([pad, query], 1),
        torch.cat([pad, box], 1),
        torch.tensor([[0, 0] + [1] * length]),
        margin,
    )
    torch.testing.assert_close(result_padded.loss, expected)


def test_mass_normalization_and_squared_hinge_on_hand_made_attention():
    """Same rows as above under the other reading: mass on M minus mass on the rest, squared hinge (Eq. 9)."""
    length = 6
    box = torch.tensor([[False, True, True, False, False, False]])
    query = torch.tensor([[False, False, False, False, True, True]])
    attn = torch.zeros(1, 1, length, length)
    attn[0, 0, 4, :5] = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1])  # mass on M 0.6, on the rest 0.4
    attn[0, 0, 5, :6] = torch.tensor([0.5, 0.05, 0.05, 0.1, 0.1, 0.2])  # mass on M 0.1, on the rest 0.9
    diffs = torch.tensor([0.6 - 0.4, 0.1 - 0.9])
    margin = 0.25
    result = eager_box_attention_loss([attn], (0,), query, box, None, margin, normalization="mass", squared=True)
    torch.testing.assert_close(result.loss, (torch.relu(margin - diffs) ** 2).mean())
    torch.testing.assert_close(result.mean_margin, diffs.mean())


def test_mean_reading_caps_the_margin_at_one_over_box_tokens():
    """With all of a row's attention on M, d_i is 1/|M| under `mean` (so any margin above it is never met) but 1
    under `mass` (every margin up to 1 can be met): the reason both readings exist (docs/training.md)."""
    n_box, length = 40, 48
    box = torch.zeros(1, length, dtype=torch.bool)
    box[0, :n_box] = True
    query = torch.zeros(1, length, dtype=torch.bool)
    query[0, -1] = True
    attn = torch.zeros(1, 1, length, length)
    attn[0, 0, -1, :n_box] = 1.0 / n_box  # every bit of attention on the box tokens
    mean = eager_box_attention_loss([attn], (0,), query, box, None, 0.025, normalization="mean", squared=False)
    mass = eager_box_attention_loss([attn], (0,), query, box, None, 0.25, normalization="mass", squared=False)
    assert mean.mean_margin.item() == pytest.approx(1.0 / n_box)
    assert mean.loss.item() == pytest.approx(0.025 - 1.0 / n_box)  # still active at the best attention possible
    assert mass.mean_margin.item() == pytest.approx(1.0) and mass.loss.item() == 0.0


def test_query_rows_counts_visible_keys():
    box = torch.tensor([[0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    query = torch.tensor([[0, 0, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 1, 0]], dtype=torch.bool)
    rows = QueryRows.from_masks(query, box, torch.tensor([[1] * 7, [0] + [1] * 6]))
    assert rows.index.tolist() == [[4, 5], [2, 5]]
    assert rows.box_count.tolist() == [[2, 2], [0, 1]]
    assert rows.other_count.tolist() == [[3, 4], [2, 4]]  # example 1: key 0 is padding
    assert rows.valid.tolist() == [[True, True], [False, True]]  # a query row before every box token is ignored
    assert rows.visible()[1, 1].tolist() == [False, True, True, True, True, True, False]
    with pytest.raises(ValueError, match="both"):
        QueryRows.from_masks(query, query, None)


def test_collector_refuses_a_model_that_does_not_report():
    model = tiny_qwen2vl()
    restore_attention(model)
    batch = synthetic_batch()
    collector = BoxAttentionCollector.from_batch(
        batch["query_image_mask"], batch["box_token_mask"], batch["attention_mask"], (0,)
    )
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **{COLLECTOR_KWARG: collector})
    with pytest.raises(ModelError, match="use_box_attention"):
        collector.loss(0.1)


def test_import_registers_nothing():
    """The attention function is process-global in transformers: importing focuskit must not register it."""
    code = (
        "import focuskit.training.attention_loss as a\n"
        "from transformers import AttentionInterface\n"
        "print(a.ATTENTION_IMPLEMENTATION in AttentionInterface._global_mapping)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert ATTENTION_IMPLEMENTATION.startswith("focuskit")
