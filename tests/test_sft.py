"""SFT on the tiny Qwen2-VL: config checks, data checks before training, the trainer's loss on real encoded episodes
(efficient = eager, w.r.t. LoRA weights), a short run with checkpoints, resume and a loadable final model."""

from __future__ import annotations

import json
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import pytest
import torch

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import ConfigError, DatasetError
from focuskit.data.episodes_jsonl import write_episodes
from focuskit.models.vlms import LoraSettings, TinyVLMConfig, build_tiny_vlm, encode_episode
from focuskit.models.vlms.factory import apply_lora, load_vlm
from focuskit.training.attention_loss import ATTENTION_IMPLEMENTATION, use_box_attention
from focuskit.training.config_io import load_training_config, save_training_config
from focuskit.training.run_sft import CONFIG_FILE, train_sft
from focuskit.training.sft_config import AttentionLossConfig, SFTConfig
from focuskit.training.sft_data import collate_for_sft
from focuskit.training.sft_trainer import FocusSFTTrainer

TINY = ["tiny.num_layers=3", "attention_loss.k=2", "disable_tqdm=true", "logging_steps=1"]


@pytest.fixture
def episodes_file(tmp_path: Path, make_image) -> Path:
    """Six 2-shot episodes: a red square that moves over noise (small images: 16 visual tokens each)."""
    episodes = []
    for i in range(6):
        rects = [(8 + 4 * j + i, 10 + 3 * j, 40 + 4 * j + i, 42 + 3 * j) for j in range(3)]
        paths = [make_image(f"e{i}_{j}.png", size=(96, 80), rect=r, seed=10 * i + j) for j, r in enumerate(rects)]
        supports = tuple(Support(p, Box(*r)) for p, r in zip(paths[:2], rects[:2], strict=True))
        episodes.append(Episode(f"ep{i}", supports, paths[2], Box(*rects[2])))
    path = tmp_path / "episodes.jsonl"
    write_episodes(episodes, path)
    return path


def sft_config(episodes: Path, out: Path, *overrides: str) -> SFTConfig:
    return load_training_config(SFTConfig, None, [f"data=[{episodes}]", f"output_dir={out}", *TINY, *overrides])


@pytest.mark.parametrize(
    ("overrides", "expectation"),
    [
        ([], does_not_raise()),
        (["learning_rate=0"], pytest.raises(ConfigError, match="learning_rate must be > 0")),
        (["gradient_accumulation_steps=0"], pytest.raises(ConfigError, match="gradient_accumulation_steps must be")),
        (["attention_loss.margin=-0.1"], pytest.raises(ConfigError, match="margin must be >= 0")),
        (["attention_loss.margin=1.5"], pytest.raises(ConfigError, match="margin must be <= 1")),
        (["attention_loss.normalization=sum"], pytest.raises(ConfigError, match="must be one of")),
        (["attention_loss.weight=-1"], pytest.raises(ConfigError, match="weight")),
        (["attention_loss.layers=middle"], pytest.raises(ConfigError, match="first_k")),
        (["attention_loss.lambda=0.1"], pytest.raises(ConfigError, match="unknown key 'lambda'")),
        (["deepspeed=no/such.json"], pytest.raises(ConfigError, match="deepspeed config not found")),
        (["num_train_epochs=0", "max_steps=-1"], pytest.raises(ConfigError, match="num_train_epochs > 0 or max_steps")),
        # Trainer fields under their transformers names; typos and old focuskit names fail naming the key.
        (["per_device_train_batchsize=2"], pytest.raises(ConfigError, match="did you mean 'per_device_train_batch")),
        (["batch_size=2"], pytest.raises(ConfigError, match=r"'batch_size' .* is now per_device_train_batch_size")),
        (["lr_scheduler_type=cosine_warm"], pytest.raises(ConfigError, match="cosine_warm")),
        (["report_to=[tensorboard]", "optim=adamw_torch", "save_strategy=epoch"], does_not_raise()),
        (["remove_unused_columns=true"], pytest.raises(ConfigError, match="remove_unused_columns must stay false")),
        (["lora=null", "shots=2"], does_not_raise()),
    ],
)
def test_config_checks(overrides, expectation):
    with expectation:
        load_training_config(SFTConfig, None, overrides)


def test_shipped_configs_load():
    root = Path(__file__).resolve().parent.parent / "configs"
    tiny = load_training_config(SFTConfig, root / "sft_tiny.yaml")
    assert tiny.model == "tiny" and tiny.tiny.num_layers >= tiny.attention_loss.k
    # bf16 and DeepSpeed are refused on this CPU machine by TrainingArguments itself: see the next test.
    big = load_training_config(SFTConfig, root / "sft_qwen2vl_7b.yaml", ["deepspeed=null", "bf16=false"])
    assert (big.lora.r, big.lora.alpha, big.gradient_accumulation_steps, big.max_grad_norm) == (8, 16, 16, 0.3)
    assert big.warmup_steps == pytest.approx(0.03) and big.lr_scheduler_type.value == "cosine"
    assert (big.attention_loss.weight, big.attention_loss.margin) == (0.25, 0.025)  # the paper's, Appendix C
    assert big.activation_checkpointing and big.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert json.loads((root / "deepspeed_zero2.json").read_text())["zero_optimization"]["stage"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without a GPU")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["deepspeed=null"], "bf16"),
        (["deepspeed=null", "bf16=false", "load_in_4bit=true"], "load_in_4bit .*needs a CUDA GPU"),
    ],
)
def test_gpu_only_settings_are_refused_without_a_gpu(overrides, message):
    root = Path(__file__).resolve().parent.parent / "configs"
    with pytest.raises(ConfigError, match=message):
        load_training_config(SFTConfig, root / "sft_qwen2vl_7b.yaml", overrides)


def test_config_round_trips_through_yaml(tmp_path):
    config = load_training_config(
        SFTConfig,
        None,
        ["attention_loss.normalization=mass", "lora.r=4", "per_device_train_batch_size=3", "report_to=[tensorboard]"],
    )
    save_training_config(config, tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert "hub_token" not in text and "learning_rate" not in text  # defaults and secrets are not written
    again = load_training_config(SFTConfig, tmp_path / "c.yaml")
    assert again.to_dict() == config.to_dict()
    assert again.attention_loss.normalization == "mass" and again.lora.r == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"box": [60, 10, 120, 40]}, r"episode 'ep1': .*lies outside the 96x80 image"),
        ({"query_box": None}, r"episode 'ep1': .*allow_absent is false"),
    ],
)
def test_bad_episodes_fail_before_training(tmp_path, episodes_file, edit, message):
    lines = [json.loads(line) for line in episodes_file.read_text().splitlines()]
    if "box" in edit:
        lines[1]["supports"][1]["box"] = edit["box"]
    else:
        lines[1]["query"]["box"] = None
    episodes_file.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=message):
        train_sft(sft_config(episodes_file, out))
    assert not out.exists()  # nothing written: the error came before training


def test_too_long_and_too_deep_fail_before_training(tmp_path, episodes_file):
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=r"max_seq_length=40.*prompt.max_pixels"):
        train_sft(sft_config(episodes_file, out, "max_seq_length=40"))
    with pytest.raises(ConfigError, match=r"k = 5 .* 3 decoder layers"):
        train_sft(sft_config(episodes_file, out, "attention_loss.k=5"))
    assert not out.exists()


@pytest.mark.parametrize("normalization", ["mean", "mass"])
def test_trainer_loss_efficient_equals_eager_on_encoded_episodes(tmp_path, episodes_file, normalization):
    """Real prompts (vision tokens, M-RoPE positions, a padded batch): same loss and LoRA gradients."""
    from transformers import TrainingArguments

    from focuskit.data.episodes_jsonl import load_episodes

    bundle = build_tiny_vlm(TinyVLMConfig(num_layers=3))
    episodes = load_episodes(episodes_file)
    items = [encode_episode(bundle.processor, ep, with_answer=True, prompt=bundle.prompt) for ep in episodes[:2]]
    items.append(encode_episode(bundle.processor, episodes[2].with_shots(1), with_answer=True, prompt=bundle.prompt))
    batch = collate_for_sft(items)
    assert batch["input_ids"].shape[1] > items[2].length  # the 1-shot episode is padded
    model = apply_lora(bundle.model, LoraSettings())
    model.train()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    results = {}
    for implementation in ("efficient", "eager"):
        use_box_attention(model, implementation)
        loss_cfg = AttentionLossConfig(
            weight=1.0, margin=0.5, implementation=implementation, normalization=normalization
        )
        trainer = FocusSFTTrainer(model=model, args=args, attention_loss=loss_cfg, attention_layers=(0, 1))
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
        results[implementation] = (loss.detach(), grads, dict(trainer._metrics["train"]))
    (l_fast, g_fast, m_fast), (l_slow, g_slow, m_slow) = results["efficient"], results["eager"]
    torch.testing.assert_close(l_fast, l_slow, rtol=1e-5, atol=1e-6)
    assert m_fast["attn_loss"][0] == pytest.approx(m_slow["attn_loss"][0], rel=1e-4)
    assert 0 < m_fast["attn_loss"][0] <= 1.5**2  # squared hinge at margin 0.5, d_i >= -1
    assert g_fast.keys() == g_slow.keys() and len(g_fast) > 0
    for name in g_fast:
        torch.testing.assert_close(g_fast[name], g_slow[name], rtol=1e-3, atol=1e-6, msg=name)


def test_example_without_box_tokens_is_skipped_and_counted(tmp_path, episodes_file, caplog):
    from transformers import TrainingArguments

    from focuskit.data.episodes_jsonl import load_episodes

    bundle = build_tiny_vlm(TinyVLMConfig(num_layers=2))
    items = [encode_episode(bundle.processor, ep, with_answer=True, prompt=bundle.prompt) for ep in
             load_episodes(episodes_file)[:2]]  # fmt: skip
    items[0].box_token_mask[:] = False
    use_box_attention(bundle.model, "efficient")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = FocusSFTTrainer(
        model=bundle.model, args=args, attention_loss=AttentionLossConfig(k=1), attention_layers=(0,)
    )
    with caplog.at_level("WARNING"):
        loss = trainer.compute_loss(bundle.model, collate_for_sft(items))
    assert torch.isfinite(loss)
    assert trainer.attention_skipped == 1
    assert "skipping 1 example" in caplog.text


def test_short_run_checkpoints_resume_and_final_model(tmp_path, episodes_file):
    out = tmp_path / "run"
    config = sft_config(
        episodes_file, out, "max_steps=4", "save_steps=2", "per_device_train_batch_size=2", "learning_rate=5e-3"
    )
    result = train_sft(config)
    assert result.global_step == 4
    for key in ("lm_loss", "attn_loss", "attn_margin"):
        values = result.series(key)
        assert len(values) == 4 and all(map(torch.isfinite, torch.tensor(values))), key
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    for name in ("focuskit_prompt.yaml", CONFIG_FILE, "adapter_model.safetensors"):
        assert (out / "checkpoint-4" / name).is_file(), name
    assert ATTENTION_IMPLEMENTATION not in (result.final_model / "config.json").read_text()
    reloaded = load_vlm(result.final_model)
    assert reloaded.prompt.max_pixels == TinyVLMConfig().max_pixels

    resumed = train_sft(
        sft_config(
            episodes_file,
            out,
            "max_steps=6",
            "save_steps=2",
            "per_device_train_batch_size=2",
            "resume_from_checkpoint=latest",
        )
    )
    assert resumed.global_step == 6
    assert [e["step"] for e in resumed.log_history if "lm_loss" in e][-2:] == [5, 6]
    assert (out / "checkpoint-6").is_dir()


def test_checkpoint_directory_trains_and_saves_a_loadable_adapter(tmp_path, episodes_file):
    """The path GPU users take: a saved checkpoint (not `tiny`), LoRA from `load_vlm`, adapter saved as final."""
    base = build_tiny_vlm(TinyVLMConfig(num_layers=2)).save(tmp_path / "base")
    out = tmp_path / "run"
    result = train_sft(sft_config(episodes_file, out, f"model={base}", "max_steps=2", "save_steps=2"))
    assert result.global_step == 2 and result.series("attn_loss")
    assert (result.final_model / "adapter_config.json").is_file()
    assert not (result.final_model / "config.json").exists()  # an adapter on top of `base`, not a full copy
    reloaded = load_vlm(result.final_model)
    assert reloaded.family == "qwen2_vl"
    with pytest.raises(ConfigError, match=r"k = 3 .* 2 decoder layers"):
        train_sft(sft_config(episodes_file, tmp_path / "run2", f"model={base}", "attention_loss.k=3"))


@pytest.mark.parametrize("usable", [True, False])
def test_record_makes_one_collective_per_batch_whatever_the_batch_held(tmp_path, usable):
    """A rank whose batch had no usable episode must make the same gathers as the others, or DDP hangs."""
    from transformers import TrainingArguments

    from focuskit.training.attention_loss import AttentionLossOutput

    bundle = build_tiny_vlm(TinyVLMConfig(num_layers=2))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = FocusSFTTrainer(
        model=bundle.model, args=args, attention_loss=AttentionLossConfig(k=1), attention_layers=(0,)
    )
    bundle.model.train()
    calls = []
    other_rank = torch.tensor([[2.0, 0.3, 0.01, 1.0, 0.0]])  # lm, loss*used, margin*used, used, skipped

    def fake_gather(value):  # this rank + a second rank whose batch had one usable example
        calls.append(tuple(value.shape))
        return torch.cat([value.reshape(1, -1), other_rank])

    trainer._gather = fake_gather
    used = 1 if usable else 0
    attention = AttentionLossOutput(torch.tensor(0.5), torch.tensor(0.02), used, 1 - used)
    trainer._record(torch.tensor(1.0), attention)
    assert calls == [(1, 5)]  # one gather, the same shape on every rank
    metrics = trainer._metrics["train"]
    assert metrics["lm_loss"] == [pytest.approx(1.5)]
    expected_loss = (0.5 + 0.3) / 2 if usable else 0.3  # averaged over the examples that had the loss
    assert metrics["attn_loss"] == [pytest.approx(expected_loss)]
    assert metrics["attn_skipped"] == [float(1 - used)]


def test_derived_keys_are_not_saved(tmp_path):
    """A config class names the fields its __post_init__ derives; they stay out of the saved YAML."""
    import dataclasses
    from typing import ClassVar

    from focuskit.training.config_io import training_config_dict

    @dataclasses.dataclass
    class Derived:
        DERIVED_KEYS: ClassVar[tuple[str, ...]] = ("total",)
        part: int = 1
        total: int | None = None

        def __post_init__(self) -> None:
            self.total = 2 * self.part

    assert training_config_dict(Derived(part=3)) == {"part": 3}
