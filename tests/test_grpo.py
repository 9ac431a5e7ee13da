"""GRPO: config checks, the loss maths, a real run on the tiny model, and diagnostics on a degenerate setup."""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from focuskit.core.config import load_config
from focuskit.core.errors import ConfigError, ModelError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm, load_vlm
from focuskit.models.vlms.factory import LoraSettings, apply_lora
from focuskit.training.grpo_config import DiagnosticsConfig, GRPOConfig, RewardWeights
from focuskit.training.grpo_trainer import GRPOTrainer, check_reference, group_advantages, grpo_token_loss
from focuskit.training.run_grpo import METRICS_FILE, train_grpo

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_vlm(TinyVLMConfig(min_pixels=56 * 56, max_pixels=56 * 56)).save(directory)
    return directory


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SynthConfig(episodes=8, shots=2, image_size=56, absent_rate=0.25, seed=5, objects=2)
    return write_synth_dataset(config, tmp_path_factory.mktemp("synth"), progress=False)


def _trainer(checkpoint: Path, episodes_file: Path, **overrides: Any) -> GRPOTrainer:
    reward_funcs = overrides.pop("reward_funcs", None)
    settings = {"batch_size": 4, "group_size": 4, "max_new_tokens": 4, "progress_bar": False, **overrides}
    config = GRPOConfig(model=str(checkpoint), data=[str(episodes_file)], **settings)
    bundle = load_vlm(checkpoint, dtype="float32")
    bundle.model = apply_lora(bundle.model, config.lora)
    episodes = [ep for ep in load_episodes(episodes_file) if ep.query_box is not None]
    return GRPOTrainer(bundle, config, episodes, reward_funcs=reward_funcs, device="cpu")


def _first_token_parity(completions: list[str], solution: list[str], **kwargs: Any) -> list[float]:
    """Reward that varies between samples of a random model: 1 when the answer's first character code is even."""
    return [float(bool(c) and ord(c[0]) % 2 == 0) for c in completions]


# --- config -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({}, nullcontext()),
        ({"batch_size": 6, "group_size": 4}, pytest.raises(ConfigError, match=r"batch_size \(6\).*group_size \(4\)")),
        ({"batch_size": 12, "group_size": 4}, nullcontext()),
        ({"group_size": 1, "batch_size": 4}, pytest.raises(ConfigError, match="group_size must be >= 2")),
        ({"reward_weights": RewardWeights(iou=1.0, format=1.0)}, nullcontext()),
        ({"beta": -0.1}, pytest.raises(ConfigError, match="beta")),
        ({"epsilon": 0.0}, pytest.raises(ConfigError, match="epsilon must be in")),
        ({"temperature": 0.0}, pytest.raises(ConfigError, match="temperature must be > 0")),
        ({"max_steps": 0}, pytest.raises(ConfigError, match="max_steps")),
        ({"warmup_ratio": 1.0}, pytest.raises(ConfigError, match="warmup_ratio")),
        ({"max_prompt_length": 4}, pytest.raises(ConfigError, match="max_prompt_length")),
    ],
)
def test_config_values(kwargs: dict[str, Any], expectation: AbstractContextManager) -> None:
    with expectation:
        GRPOConfig(**kwargs)


@pytest.mark.parametrize(
    ("weights", "match"),
    [({"iou": -1.0}, "reward_weights.iou must be >= 0"), ({"iou": 0.0, "format": 0.0}, "both 0")],
)
def test_reward_weights_refused(weights: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RewardWeights(**weights)


def test_negative_weight_in_yaml_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("reward_weights: {iou: 1.0, format: -0.5}\n")
    with pytest.raises(ConfigError, match=r"reward_weights.format must be >= 0, got -0.5"):
        load_config(GRPOConfig, path)


@pytest.mark.parametrize("name", ["grpo_tiny.yaml", "grpo_qwen2vl_7b.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(GRPOConfig, CONFIGS / name)
    assert config.batch_size % config.group_size == 0
    assert config.warmup_ratio == 0.01 and config.max_grad_norm == 1.0
    assert not config.absent_episodes


def test_seven_b_config_is_gpu_ready() -> None:
    config = load_config(GRPOConfig, CONFIGS / "grpo_qwen2vl_7b.yaml")
    assert config.bf16 and config.attn_implementation == "flash_attention_2" and config.max_prompt_length == 8192


def test_missing_sft_checkpoint_is_refused_before_loading(tmp_path: Path, episodes_file: Path) -> None:
    config = GRPOConfig(model=str(tmp_path / "nope"), data=[str(episodes_file)], output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="SFT checkpoint not found"):
        train_grpo(config)
    assert not (tmp_path / "out").exists()


def test_missing_data_file_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    config = GRPOConfig(model=str(tiny_checkpoint), data=[str(tmp_path / "x.jsonl")])
    with pytest.raises(ConfigError, match="episode file not found"):
        train_grpo(config)


# --- maths --------------------------------------------------------------------------------------------------------
def test_group_advantages_are_zero_for_equal_rewards_and_normalized_otherwise() -> None:
    rewards = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0])
    adv = group_advantages(rewards, 4)
    assert torch.equal(adv[:4], torch.zeros(4))
    assert torch.allclose(adv[4:], torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.allclose(group_advantages(rewards, 4, scale=False)[4:], torch.tensor([-0.5, 0.5, -0.5, 0.5]))


def _loss(logps: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, adv: torch.Tensor, beta: float = 0.0):
    mask = torch.ones_like(logps, dtype=torch.bool)
    return grpo_token_loss(
        logps, old, ref, adv, mask, epsilon_low=0.2, epsilon_high=0.2, beta=beta, loss_type="grpo", normalizer=2.0
    )


def test_policy_gradient_raises_good_answers_and_lowers_bad_ones() -> None:
    logps = torch.tensor([[-1.0, -2.0], [-1.5, -0.5]], requires_grad=True)
    loss, _ = _loss(logps, logps.detach(), None, torch.tensor([1.0, -1.0]))
    loss.backward()
    # Gradient descent moves logps against the gradient: up for the positive advantage, down for the negative.
    assert torch.all(logps.grad[0] < 0) and torch.all(logps.grad[1] > 0)
    assert torch.allclose(logps.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))


def test_clipped_ratio_gives_no_gradient() -> None:
    old = torch.tensor([[-2.0]])
    logps = torch.tensor([[-1.0]], requires_grad=True)  # ratio e^1 > 1.2 with a positive advantage: clipped
    loss, stats = _loss(logps, old, None, torch.tensor([1.0]))
    loss.backward()
    assert logps.grad.abs().max() == 0
    assert stats["clip_ratio"] == 1.0


def test_kl_term_is_zero_at_the_reference_and_pulls_back_otherwise() -> None:
    ref = torch.tensor([[-1.0, -1.0]])
    same = ref.clone().requires_grad_(True)
    loss, stats = _loss(same, same.detach(), ref, torch.zeros(1), beta=0.5)
    loss.backward()
    assert stats["kl"] == 0.0 and same.grad.abs().max() == 0
    moved = torch.tensor([[-0.5, -0.5]], requires_grad=True)
    loss, stats = _loss(moved, moved.detach(), ref, torch.zeros(1), beta=0.5)
    loss.backward()
    assert stats["kl"] > 0 and torch.all(moved.grad > 0)  # descent lowers logps back toward the reference


# --- the trainer on the tiny model ------------------------------------------------------------------------------
def test_shared_vision_features_give_identical_logps(tiny_checkpoint: Path, episodes_file: Path) -> None:
    trainer = _trainer(tiny_checkpoint, episodes_file)
    (group,) = trainer.rollout(trainer.episodes[:1])
    assert trainer._share_vision
    shared = trainer.group_logps(group)
    trainer._share_vision = False
    assert torch.allclose(shared, trainer.group_logps(group), atol=1e-5)


def test_reference_mismatch_is_refused(tiny_checkpoint: Path, episodes_file: Path) -> None:
    trainer = _trainer(tiny_checkpoint, episodes_file)
    assert check_reference(trainer, trainer.episodes[0]) == 0.0
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    with pytest.raises(ModelError, match=r"reference policy .* does not match"):
        check_reference(trainer, trainer.episodes[0])


def test_zero_variance_warning_fires_when_all_samples_are_identical(
    tiny_checkpoint: Path, episodes_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    diagnostics = DiagnosticsConfig(zero_std_patience=2, min_format_rate=0.0)
    trainer = _trainer(
        tiny_checkpoint, episodes_file, temperature=1e-4, max_steps=2, diagnostics=diagnostics,
        reward_funcs=[_first_token_parity],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="focuskit.training.grpo_trainer"):
        history = trainer.train()
    assert all(h["reward_std_within"] == 0 for h in history)
    assert len(trainer.monitor.warnings) == 1
    assert "reward std within groups has been ~0" in caplog.text


def test_no_warning_when_rewards_vary(tiny_checkpoint: Path, episodes_file: Path) -> None:
    diagnostics = DiagnosticsConfig(zero_std_patience=2, min_format_rate=0.0)
    trainer = _trainer(
        tiny_checkpoint, episodes_file, temperature=1.0, max_steps=2, diagnostics=diagnostics,
        reward_funcs=[_first_token_parity], seed=3,
    )  # fmt: skip
    history = trainer.train()
    assert any(h["reward_std_within"] > 0 for h in history)
    assert trainer.monitor.warnings == []


def test_a_step_moves_probability_toward_rewarded_answers(tiny_checkpoint: Path, episodes_file: Path) -> None:
    """One small update on fixed rollouts raises sum_i A_i * mean_t log p(answer_i): the GRPO objective."""
    torch.manual_seed(0)
    trainer = _trainer(
        tiny_checkpoint, episodes_file, learning_rate=1e-4, beta=0.0, lr_scheduler="constant", batch_size=8,
        reward_funcs=[_first_token_parity], seed=0,
    )  # fmt: skip
    groups = trainer.rollout(trainer.episodes[:2])
    assert any(float(g.rewards.std()) > 0 for g in groups), "the rollouts must differ in reward for this test"

    def objective() -> float:
        total = 0.0
        with torch.no_grad():
            for g in groups:
                mask = g.completion_mask.float()
                per_answer = (trainer.group_logps(g) * mask).sum(dim=1) / mask.sum(dim=1)
                total += float((group_advantages(g.rewards, 4) * per_answer).sum())
        return total

    before = objective()
    trainer.rollout = lambda episodes: groups  # type: ignore[method-assign]
    trainer.step(1)
    assert objective() > before


def test_train_grpo_end_to_end(tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = GRPOConfig(
        model=str(tiny_checkpoint), data=[str(episodes_file)], output_dir=str(out), batch_size=4, max_steps=2,
        max_new_tokens=4, progress_bar=False, save_steps=1, diagnostics=DiagnosticsConfig(zero_std_patience=2),
    )  # fmt: skip
    result = train_grpo(config)
    assert result.dropped_absent == sum(ep.query_box is None for ep in load_episodes(episodes_file)) > 0
    assert result.reference_diff == 0.0
    lines = [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in ("reward", "reward_std_within", "format_rate", "iou", "kl", "parse_rate", "box_area_ratio"):
        assert key in lines[0]
    # A random model writes no boxes: both diagnostics warn, and the run says so instead of failing silently.
    assert len(result.warnings) == 2
    reloaded = load_vlm(result.final_model, dtype="float32")
    assert reloaded.prompt.min_pixels == 56 * 56
    assert (out / "checkpoint-1" / "adapter_config.json").is_file()
    assert load_vlm(out / "checkpoint-1", dtype="float32").family == "qwen2_vl"


def test_absent_episodes_are_kept_when_enabled(tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path) -> None:
    config = GRPOConfig(
        model=str(tiny_checkpoint), data=[str(episodes_file)], output_dir=str(tmp_path / "run"), batch_size=4,
        max_steps=1, max_new_tokens=2, progress_bar=False, absent_episodes=True, save_merged=True,
    )  # fmt: skip
    result = train_grpo(config)
    assert result.dropped_absent == 0 and result.episodes == 8
    bundle = load_vlm(result.final_model, dtype="float32")
    assert bundle.prompt.allow_absent
    assert not hasattr(bundle.model, "disable_adapter")  # merged: a plain model


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    from focuskit.cli.main import app

    path = tmp_path / "g.yaml"
    path.write_text("batch_size: 6\ngroup_size: 4\n")
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(path)])
    assert result.exit_code == 2
    assert "focuskit: error:" in result.output and "multiple of group_size" in result.output


def test_lora_settings_are_required_for_the_reference(tiny_checkpoint: Path, episodes_file: Path) -> None:
    bundle = load_vlm(tiny_checkpoint, dtype="float32")
    config = GRPOConfig(model=str(tiny_checkpoint), data=[str(episodes_file)], batch_size=4)
    with pytest.raises(ModelError, match="LoRA-wrapped"):
        GRPOTrainer(bundle, config, load_episodes(episodes_file))
    assert LoraSettings().r == 8


def test_start_from_an_sft_adapter_merges_it_into_the_reference(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path
) -> None:
    """An SFT LoRA adapter is merged first, so "adapter disabled" is the SFT model, and saved as the GRPO base."""
    sft = load_vlm(tiny_checkpoint, dtype="float32")
    sft.model = apply_lora(sft.model, LoraSettings())
    with torch.no_grad():
        for name, p in sft.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter: the SFT model differs from its base
    sft.model.peft_config["default"].base_model_name_or_path = str(tiny_checkpoint)
    sft.save(tmp_path / "sft_adapter")

    config = GRPOConfig(
        model=str(tmp_path / "sft_adapter"), data=[str(episodes_file)], output_dir=str(tmp_path / "run"),
        batch_size=4, max_steps=1, max_new_tokens=2, progress_bar=False,
    )  # fmt: skip
    result = train_grpo(config)
    assert result.reference_diff == 0.0
    reference = tmp_path / "run" / "reference"
    assert (reference / "config.json").is_file()
    adapter_cfg = json.loads((result.final_model / "adapter_config.json").read_text())
    assert Path(adapter_cfg["base_model_name_or_path"]) == reference.resolve()
    assert load_vlm(result.final_model, dtype="float32").family == "qwen2_vl"


def test_box_area_ratio_reports_hedging(tiny_checkpoint: Path, episodes_file: Path) -> None:
    from focuskit.training.grpo_trainer import Group

    trainer = _trainer(tiny_checkpoint, episodes_file)
    truth = "<|box_start|>(100,100),(300,300)<|box_end|>"
    texts = [truth, "<|box_start|>(0,0),(400,400)<|box_end|>", "not a box"]
    ids = torch.zeros(3, 1, dtype=torch.long)
    group = Group(trainer.episodes[0], None, truth, (56, 56), (56, 56), ids, ids.bool(), texts)  # type: ignore[arg-type]
    assert trainer._area_ratios(group) == pytest.approx([1.0, 4.0], rel=0.05)


def test_two_steps_through_an_explicit_accelerator(tiny_checkpoint: Path, episodes_file: Path) -> None:
    """The `accelerate launch` path on one CPU process: prepare, accumulate two groups per step, clip, step."""
    from accelerate import Accelerator

    config = GRPOConfig(
        model=str(tiny_checkpoint), data=[str(episodes_file)], batch_size=8, group_size=4, max_new_tokens=4,
        max_steps=2, progress_bar=False, learning_rate=1e-3, seed=3,
    )  # fmt: skip
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=config.episodes_per_step, step_scheduler_with_optimizer=False
    )
    bundle = load_vlm(tiny_checkpoint, dtype="float32")
    bundle.model = apply_lora(bundle.model, config.lora)
    episodes = [ep for ep in load_episodes(episodes_file) if ep.query_box is not None]
    trainer = GRPOTrainer(bundle, config, episodes, reward_funcs=[_first_token_parity], accelerator=accelerator)
    before = {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}
    history = trainer.train()
    assert [h["step"] for h in history] == [1.0, 2.0]
    assert all(h["grad_norm"] == h["grad_norm"] and h["loss"] == h["loss"] for h in history)  # not NaN
    assert accelerator.step == 4  # two groups per step, two steps
    assert accelerator.unwrap_model(trainer.model) is trainer.unwrapped  # one process: nothing is wrapped
    assert any(h["reward_std_within"] > 0 for h in history), "this seed must give a learning signal"
    assert any(not torch.equal(p, before[n]) for n, p in trainer.unwrapped.named_parameters() if n in before)
