"""Rollouts ignore the checkpoint's generation_config: a Qwen2-VL-Instruct-like one gives the same samples."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm, load_vlm
from focuskit.models.vlms.factory import lora_config
from focuskit.training import grpo_trainer
from focuskit.training.grpo_config import FocusGRPOConfig
from focuskit.training.grpo_data import GRPOEpisodes
from focuskit.training.grpo_trainer import FocusGRPOTrainer

LEAKY = {"repetition_penalty": 1.05, "top_k": 1, "top_p": 0.001, "temperature": 0.01, "do_sample": True,
         "min_p": 0.5, "no_repeat_ngram_size": 1}  # fmt: skip
"""Qwen2-VL-7B-Instruct's shipped sampling values, plus two options TRL never sets (min_p, no_repeat_ngram_size)."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("gencfg")
    clean = build_tiny_vlm(TinyVLMConfig(min_pixels=56 * 56, max_pixels=56 * 56)).save(root / "clean")
    leaky = Path(shutil.copytree(clean, root / "leaky"))
    path = leaky / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **LEAKY}))
    synth = SynthConfig(episodes=2, shots=2, image_size=56, absent_rate=0.0, seed=4, objects=2)
    return clean, leaky, write_synth_dataset(synth, root / "synth", progress=False)


def _completions(checkpoint: Path, episodes_file: Path, out: Path) -> torch.Tensor:
    args = FocusGRPOConfig(
        model=str(checkpoint), data=[str(episodes_file)], output_dir=str(out), per_device_train_batch_size=4,
        num_generations=4, max_completion_length=8, temperature=1.0, disable_tqdm=True, report_to="none",
    )  # fmt: skip
    bundle = load_vlm(checkpoint, dtype="float32")
    assert (bundle.model.generation_config.top_k == 1) == (checkpoint.name == "leaky")
    data = GRPOEpisodes(load_episodes(episodes_file), bundle.processor, bundle.family, bundle.prompt, cache=True)
    trainer = FocusGRPOTrainer(bundle.model, data=data, args=args, peft_config=lora_config(args.lora))
    trainer.model.train()
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 4)
    assert trainer.model.get_base_model().generation_config.top_k == bundle.model.generation_config.top_k  # restored
    return batch["completion_ids"]


def test_checkpoint_generation_config_does_not_reach_rollouts(checkpoints: tuple[Path, Path, Path], tmp_path: Path):
    clean, leaky, episodes = checkpoints
    expected = _completions(clean, episodes, tmp_path / "a")
    assert len({tuple(row.tolist()) for row in expected}) > 1, "temperature 1 samples must differ"
    assert torch.equal(_completions(leaky, episodes, tmp_path / "b"), expected)


def test_without_the_neutral_config_the_checkpoint_would_leak(
    checkpoints: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above can fail: with TRL's own generation settings alone, min_p / no_repeat_ngram_size leak."""
    clean, leaky, episodes = checkpoints
    monkeypatch.setattr(grpo_trainer, "checkpoint_generation_defaults_disabled", lambda m: contextlib.nullcontext())
    assert not torch.equal(_completions(leaky, episodes, tmp_path / "b"), _completions(clean, episodes, tmp_path / "a"))
