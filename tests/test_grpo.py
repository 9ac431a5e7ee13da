"""GRPO on TRL: the config (TRL fields + ours), prompts identical to evaluation, decoding, diagnostics, runs."""

from __future__ import annotations

import importlib.util
import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
import trl
from typer.testing import CliRunner

from focuskit.core.errors import ConfigError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm, encode_episode, load_vlm
from focuskit.models.vlms.factory import LoraSettings, apply_lora, lora_config
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.training.config_io import load_training_config
from focuskit.training.grpo_callbacks import ZeroVarianceMonitor
from focuskit.training.grpo_config import DiagnosticsConfig, FocusGRPOConfig
from focuskit.training.grpo_data import GRPOEpisodes, configure_processor
from focuskit.training.grpo_trainer import FocusGRPOTrainer
from focuskit.training.run_grpo import CONFIG_FILE, METRICS_FILE, train_grpo

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = {"disable_tqdm": True, "report_to": "none"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_vlm(TinyVLMConfig(min_pixels=56 * 56, max_pixels=56 * 56)).save(directory)
    return directory


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SynthConfig(episodes=8, shots=2, image_size=56, absent_rate=0.25, seed=5, objects=2)
    return write_synth_dataset(config, tmp_path_factory.mktemp("synth"), progress=False)


def _config(checkpoint: Path, episodes_file: Path, out: Path, **overrides: Any) -> FocusGRPOConfig:
    settings = {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 4, "max_steps": 2,
                **QUIET, **overrides}  # fmt: skip
    return FocusGRPOConfig(model=str(checkpoint), data=[str(episodes_file)], output_dir=str(out), **settings)


# --- config -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({}, nullcontext()),
        ({"per_device_train_batch_size": 6}, pytest.raises(ConfigError, match=r"\(6\) must be a multiple of num_gen")),
        ({"per_device_train_batch_size": 12}, nullcontext()),
        ({"num_generations": 1, "per_device_train_batch_size": 4}, pytest.raises(ConfigError, match=">= 2")),
        ({"beta": -0.1}, pytest.raises(ConfigError, match="beta")),
        ({"epsilon": 0.0}, pytest.raises(ConfigError, match="epsilon must be in")),
        ({"temperature": 0.0}, pytest.raises(ConfigError, match="temperature must be > 0")),
        ({"max_steps": 0}, pytest.raises(ConfigError, match="max_steps")),
        ({"max_prompt_length": 4}, pytest.raises(ConfigError, match="max_prompt_length")),
        ({"repetition_penalty": 1.05}, pytest.raises(ConfigError, match=r"repetition_penalty must be 1\.0")),
        ({"reward_weights": [1.0]}, pytest.raises(ConfigError, match=r"reward_weights \(1\) must match .* \(2")),
        ({"reward_weights": [1.0, -0.5]}, pytest.raises(ConfigError, match="weight of format must be >= 0")),
        ({"reward_weights": [0.0, 0.0]}, pytest.raises(ConfigError, match="all 0")),
        ({"reward_funcs": ["iou", "bleu"]}, pytest.raises(ConfigError, match="unknown reward 'bleu'")),
        ({"loss_type": "dapo", "epsilon_high": 0.28}, nullcontext()),
        ({"generation_batch_size": 6}, pytest.raises(ConfigError, match="generation_batch_size")),  # TRL's check
    ],
)
def test_config_values(kwargs: dict[str, Any], expectation: AbstractContextManager) -> None:
    with expectation:
        FocusGRPOConfig(**kwargs)


def test_is_a_trl_grpo_config_and_yaml_fills_trl_fields(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(
        "loss_type: dapo\nepsilon_high: 0.28\nscale_rewards: none\nmask_truncated_completions: true\n"
        "use_vllm: true\nvllm_mode: server\nsave_steps: 7\nreport_to: [tensorboard]\nlora: {r: 4}\n"
        "resume_from_checkpoint: last\nbeta: 0.0\n"
    )
    config = load_training_config(FocusGRPOConfig, path, ["num_generations=2", "per_device_train_batch_size=4"])
    assert isinstance(config, trl.GRPOConfig)
    assert (config.loss_type, config.epsilon_high, config.scale_rewards) == ("dapo", 0.28, "none")
    assert config.mask_truncated_completions and config.use_vllm and config.vllm_mode == "server"
    assert (config.save_steps, config.report_to, config.lora.r, config.beta) == (7, ["tensorboard"], 4, 0.0)
    assert config.generation_batch_size == 4 and config.num_generations == 2


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("group_size: 4\n", "key 'group_size' .* is now num_generations"),  # the hand-written trainer's name
        ("num_generation: 4\n", "unknown key 'num_generation' .*did you mean 'num_generations'"),
        ("lora: {rank: 4}\n", "unknown key 'rank'"),
    ],
)
def test_unknown_or_renamed_key_names_the_key(tmp_path: Path, yaml_text: str, match: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_training_config(FocusGRPOConfig, path)


@pytest.mark.parametrize("name", ["grpo_tiny.yaml", "grpo_qwen2vl_7b.yaml"])
def test_shipped_configs_load(name: str) -> None:
    # bf16 needs a GPU: check the rest here
    config = load_training_config(FocusGRPOConfig, CONFIGS / name, ["bf16=false"])
    assert config.per_device_train_batch_size % config.num_generations == 0
    assert config.repetition_penalty == 1.0 and config.top_k == 0 and config.top_p == 1.0
    assert not config.absent_episodes and config.reward_funcs == ["iou", "format"]


def test_seven_b_config_is_gpu_ready_with_a_lora_learning_rate() -> None:
    import yaml

    raw = yaml.safe_load((CONFIGS / "grpo_qwen2vl_7b.yaml").read_text())
    assert raw["bf16"] is True and raw["attn_implementation"] == "flash_attention_2"
    assert raw["learning_rate"] == pytest.approx(1e-5)  # 10x the full-fine-tuning GRPO rate (see the YAML comment)
    assert "load_in_4bit" in raw and raw["gradient_checkpointing"] is True


def test_missing_sft_checkpoint_is_refused_before_loading(tmp_path: Path, episodes_file: Path) -> None:
    config = _config(tmp_path / "nope", episodes_file, tmp_path / "out")
    with pytest.raises(ConfigError, match="SFT checkpoint not found"):
        train_grpo(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("resume", ["last", "runs/nowhere/checkpoint-3"])
def test_resume_without_a_checkpoint_is_refused(
    tmp_path: Path, tiny_checkpoint: Path, episodes_file: Path, resume: str
) -> None:
    config = _config(tiny_checkpoint, episodes_file, tmp_path / "out", resume_from_checkpoint=resume)
    with pytest.raises(ConfigError, match="resume_from_checkpoint"):
        train_grpo(config)


def test_missing_data_file_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="episode file not found"):
        train_grpo(_config(tiny_checkpoint, tmp_path / "x.jsonl", tmp_path / "out"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_four_bit_without_a_gpu_is_refused_before_training(
    tmp_path: Path, tiny_checkpoint: Path, episodes_file: Path
) -> None:
    with pytest.raises(ConfigError, match=r"load_in_4bit \(QLoRA\) needs a CUDA GPU"):
        train_grpo(_config(tiny_checkpoint, episodes_file, tmp_path / "out", load_in_4bit=True))
    assert not (tmp_path / "out").exists()


def test_vllm_needs_vllm_and_a_checkpoint_that_resizes_like_the_prompt(
    tmp_path: Path, tiny_checkpoint: Path, episodes_file: Path
) -> None:
    from focuskit.training.run_grpo import check_vllm_processor

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="use_vllm needs the vllm package"):
            train_grpo(_config(tiny_checkpoint, episodes_file, tmp_path / "out", use_vllm=True))
        assert not (tmp_path / "out").exists()
    check_vllm_processor(tiny_checkpoint, PromptConfig(min_pixels=56 * 56, max_pixels=56 * 56))  # as saved
    with pytest.raises(ConfigError, match=r"resizes to 3136\.\.3136 pixels but the prompt config says 3136\.\.12544"):
        check_vllm_processor(tiny_checkpoint, PromptConfig(min_pixels=56 * 56, max_pixels=112 * 112))


def test_llava_family_is_refused_with_the_reason(tiny_checkpoint: Path) -> None:
    processor = load_vlm(tiny_checkpoint, dtype="float32").processor
    with pytest.raises(ConfigError, match="LLaVA-OneVision's chat template moves every image"):
        configure_processor(processor, "llava_onevision", PromptConfig())


def test_the_lora_handed_to_trl_is_the_configs(tmp_path: Path) -> None:
    """TRL's peft_config comes from `lora:`, targeting the language model only (tests/test_vlm_7b_meta.py counts it)."""
    config = load_training_config(FocusGRPOConfig, CONFIGS / "grpo_qwen2vl_7b.yaml", ["bf16=false", "lora.r=16"])
    peft_config = lora_config(config.lora)
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (16, 16, 0.0)
    assert peft_config.target_modules == LoraSettings(r=16).target_regex()


# --- the trainer --------------------------------------------------------------------------------------------------
def _trainer(checkpoint: Path, episodes_file: Path, out: Path, **overrides: Any) -> FocusGRPOTrainer:
    args = _config(checkpoint, episodes_file, out, **overrides)
    bundle = load_vlm(checkpoint, dtype="float32")
    episodes = [ep for ep in load_episodes(episodes_file) if ep.query_box is not None]
    data = GRPOEpisodes(episodes, bundle.processor, bundle.family, bundle.prompt, cache=True)
    return FocusGRPOTrainer(bundle.model, data=data, args=args, peft_config=lora_config(args.lora))


def test_training_batch_has_exactly_the_evaluation_tokens_and_pixels(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path
) -> None:
    """The prompt TRL samples from and scores is `encode_episode`'s, byte for byte (left padding aside)."""
    trainer = _trainer(tiny_checkpoint, episodes_file, tmp_path / "out", per_device_train_batch_size=8)
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0,) * 4 + (3,) * 4]
    batch = trainer._generate_and_score_completions(rows)
    reference = load_vlm(tiny_checkpoint, dtype="float32")  # a fresh processor: the evaluation side
    expected = [encode_episode(reference.processor, trainer.focus_data.episodes[i], with_answer=False,
                               prompt=reference.prompt) for i in (0, 3)]  # fmt: skip
    for row in range(8):
        enc = expected[row // 4].inputs
        ids = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()]
        assert torch.equal(ids, enc["input_ids"][0])
        types = batch["mm_token_type_ids"][row][-(enc["input_ids"].shape[1] + batch["completion_ids"].shape[1]) :]
        assert torch.equal(types[: enc["input_ids"].shape[1]], enc["mm_token_type_ids"][0])
    pixels = torch.cat([expected[row // 4].inputs["pixel_values"] for row in range(8)])
    assert torch.equal(batch["pixel_values"], pixels)
    assert torch.equal(
        batch["image_grid_thw"], torch.cat([expected[r // 4].inputs["image_grid_thw"] for r in range(8)])
    )


def test_answers_are_decoded_with_box_tokens(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL decodes with skip_special_tokens=True, which deletes <|box_start|>/<|box_end|>; ours keeps them."""
    trainer = _trainer(tiny_checkpoint, episodes_file, tmp_path / "out")
    tok = trainer.processing_class.tokenizer
    answer = "<|box_start|>(10,20),(300,400)<|box_end|>"
    ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert "<|box_start|>" not in tok.decode(ids, skip_special_tokens=True)

    def fake_generate(self: Any, prompts: list[Any]) -> tuple[Any, ...]:
        return [[1]], [ids], None, [[{"role": "assistant", "content": "stripped"}]], None, {}, None, []

    monkeypatch.setattr(trl.GRPOTrainer, "_generate", fake_generate)
    completions = trainer._generate([[{"role": "user", "content": "x"}]])[3]
    assert completions == [[{"role": "assistant", "content": answer}]]


def test_rollouts_stop_at_end_of_turn_and_never_sample_vision_tokens(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path
) -> None:
    trainer = _trainer(tiny_checkpoint, episodes_file, tmp_path / "out")
    tok = trainer.processing_class.tokenizer
    assert tok.convert_tokens_to_ids("<|im_end|>") in trainer.generation_config.eos_token_id
    suppressed = set(trainer.generation_config.suppress_tokens)
    assert {tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")} <= suppressed


def test_reference_is_the_adapter_disabled_start_model(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path
) -> None:
    """TRL wraps the model with our LoRA settings and keeps no reference copy and no 'ref' adapter."""
    trainer = _trainer(tiny_checkpoint, episodes_file, tmp_path / "out", beta=0.04)
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)


def test_diagnostics_metrics_are_computed_from_the_answers(
    tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path
) -> None:
    trainer = _trainer(tiny_checkpoint, episodes_file, tmp_path / "out")
    trainer.model.train()
    truth = "<|box_start|>(100,100),(300,300)<|box_end|>"
    row = {"solution": truth, "image_size": [56, 56], "resized_size": [56, 56], "family": "qwen2_vl",
           "allow_absent": False}  # fmt: skip
    swapped = "<|box_start|>(300,300),(100,100)<|box_end|>"  # parses (repaired), not the trained form
    answers = [truth, "<|box_start|>(0,0),(400,400)<|box_end|>", swapped, "no idea"]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    rewards = torch.tensor([[1.0, 1.0], [0.25, 1.0], [1.0, 0.0], [0.0, 0.0]])  # (answers, reward functions)
    trainer._log_diagnostics([row] * 4, completions, rewards)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["parse_rate"] == 0.75 and metrics["format_rate"] == 0.5
    assert metrics["iou"] == pytest.approx((1.0 + 0.25 + 1.0 + 0.0) / 4, abs=1e-3)
    assert metrics["box_area_ratio"] == pytest.approx(1.0, rel=1e-3)  # median of 1, 4, 1
    assert metrics["reward_std_within"] == pytest.approx(float(torch.tensor([2.0, 1.25, 1.0, 0.0]).std(unbiased=False)))


@pytest.mark.parametrize(
    ("stds", "formats", "warnings"),
    [
        ([0.0, 0.0, 0.0], [0.5] * 3, 1),
        ([0.0, 0.3, 0.0], [0.5] * 3, 0),
        ([0.2] * 3, [0.0] * 3, 1),
        ([0.0] * 3, [0.0] * 3, 2),
        ([0.0] * 2, [0.0] * 2, 0),
    ],
)
def test_zero_variance_monitor_warns_once_per_streak(stds: list[float], formats: list[float], warnings: int) -> None:
    monitor = ZeroVarianceMonitor(DiagnosticsConfig(zero_std_patience=3))
    for step, (std, fmt) in enumerate(zip(stds, formats, strict=True), start=1):
        monitor.update(step, std, fmt)
    assert len(monitor.warnings) == warnings


# --- runs ---------------------------------------------------------------------------------------------------------
def test_train_grpo_end_to_end(tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _config(
        tiny_checkpoint, episodes_file, out, save_steps=1, diagnostics=DiagnosticsConfig(zero_std_patience=2)
    )
    result = train_grpo(config)
    assert result.dropped_absent == sum(ep.query_box is None for ep in load_episodes(episodes_file)) > 0
    lines = [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    trl_keys = ("reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "clip_ratio/region_mean",
                "completions/mean_length", "rewards/iou_reward/mean", "loss", "grad_norm", "step_time")  # fmt: skip
    ours = ("iou", "format_rate", "parse_rate", "box_area_ratio", "reward_std_within")
    assert all(key in lines[0] for key in trl_keys + ours)
    # A random model writes no boxes: both diagnostics warn, and the run says so instead of failing silently.
    assert len(result.warnings) == 2 and lines[0]["frac_reward_zero_std"] == 1.0
    reloaded = load_vlm(result.final_model, dtype="float32")
    assert reloaded.prompt.min_pixels == 56 * 56 and reloaded.family == "qwen2_vl"
    checkpoint = out / "checkpoint-1"
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert load_vlm(checkpoint, dtype="float32").prompt.max_pixels == 56 * 56
    again = load_training_config(FocusGRPOConfig, out / CONFIG_FILE)  # the record of the run reads back
    assert (again.max_steps, again.save_steps, again.model) == (2, 1, str(tiny_checkpoint))


def test_absent_episodes_are_kept_when_enabled(tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path) -> None:
    config = _config(tiny_checkpoint, episodes_file, tmp_path / "run", max_steps=1, max_completion_length=2,
                     absent_episodes=True, save_merged=True)  # fmt: skip
    result = train_grpo(config)
    assert result.dropped_absent == 0 and result.episodes == 8
    bundle = load_vlm(result.final_model, dtype="float32")
    assert bundle.prompt.allow_absent
    assert not hasattr(bundle.model, "disable_adapter")  # merged: a plain model


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

    config = _config(tmp_path / "sft_adapter", episodes_file, tmp_path / "run", max_steps=1, max_completion_length=2)
    result = train_grpo(config)
    reference = tmp_path / "run" / "reference"
    assert (reference / "config.json").is_file()
    adapter_cfg = json.loads((result.final_model / "adapter_config.json").read_text())
    assert Path(adapter_cfg["base_model_name_or_path"]) == reference.resolve()
    assert load_vlm(result.final_model, dtype="float32").family == "qwen2_vl"


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    from focuskit.cli.main import app

    path = tmp_path / "g.yaml"
    path.write_text("per_device_train_batch_size: 6\nnum_generations: 4\n")
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(path)])
    assert result.exit_code == 2
    assert "focuskit: error:" in result.output and "multiple of num_generations" in result.output


def test_cli_trains_logs_trl_metrics_and_resumes(tiny_checkpoint: Path, episodes_file: Path, tmp_path: Path) -> None:
    from focuskit.cli.main import app

    path = tmp_path / "g.yaml"
    path.write_text(
        f"model: {tiny_checkpoint}\ndata: [{episodes_file}]\noutput_dir: {tmp_path / 'run'}\nnum_generations: 4\n"
        "per_device_train_batch_size: 4\nmax_completion_length: 3\nmax_steps: 1\nsave_steps: 1\n"
        "disable_tqdm: true\nreport_to: none\n"
    )
    first = CliRunner().invoke(app, ["train", "grpo", "--config", str(path)])
    assert first.exit_code == 0, first.output
    assert "trained to step 1" in first.output and "frac_reward_zero_std: 1.0000" in first.output
    resumed = CliRunner().invoke(
        app, ["train", "grpo", "--config", str(path), "max_steps=2", "resume_from_checkpoint=true"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "trained to step 2" in resumed.output
    assert len((tmp_path / "run" / METRICS_FILE).read_text().splitlines()) == 2
