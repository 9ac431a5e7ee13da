"""Resume: a GRPO run interrupted after a checkpoint and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm
from focuskit.training.grpo_config import FocusGRPOConfig
from focuskit.training.run_grpo import train_grpo


def parity_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Varies between samples of a random model, so every step has a gradient."""
    return [float(len(c[-1]["content"]) % 2) for c in completions]


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after `step` (its checkpoint is saved first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    build_tiny_vlm(TinyVLMConfig(min_pixels=56 * 56, max_pixels=56 * 56)).save(root / "model")
    synth = SynthConfig(episodes=6, shots=2, image_size=56, absent_rate=0.0, seed=2, objects=2)
    return root / "model", write_synth_dataset(synth, root / "synth", progress=False)


def _config(inputs: tuple[Path, Path], out: Path, **overrides: Any) -> FocusGRPOConfig:
    model, data = inputs
    return FocusGRPOConfig(
        model=str(model), data=[str(data)], output_dir=str(out), per_device_train_batch_size=4, num_generations=4,
        max_completion_length=5, max_steps=4, save_steps=2, learning_rate=1e-3, lr_scheduler_type="cosine",
        reward_weights=None, beta=0.04, disable_tqdm=True, report_to="none", seed=7, **overrides,
    )  # fmt: skip


def test_resumed_run_matches_an_uninterrupted_one(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    straight = train_grpo(_config(inputs, tmp_path / "a"), reward_funcs=[parity_reward])
    first = train_grpo(_config(inputs, tmp_path / "b"), reward_funcs=[parity_reward], callbacks=[StopAt(2)])
    assert first.global_step == 2 and (tmp_path / "b" / "checkpoint-2" / "optimizer.pt").is_file()
    resumed = train_grpo(
        _config(inputs, tmp_path / "b", resume_from_checkpoint="last"),  # the latest checkpoint-N in output_dir
        reward_funcs=[parity_reward],
    )
    assert resumed.global_step == 4
    a = load_file(straight.final_model / "adapter_model.safetensors")
    b = load_file(resumed.final_model / "adapter_model.safetensors")
    start = load_file(tmp_path / "b" / "checkpoint-2" / "adapter_model.safetensors")
    assert any(not torch.equal(b[k], start[k]) for k in b), "steps 3-4 must change the adapters"
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-6, f"resumed adapters differ from the uninterrupted run's by {diff:.3g}"
    for key in ("reward", "loss", "kl"):
        assert resumed.series(key)[-2:] == pytest.approx(straight.series(key)[2:], rel=1e-5, abs=1e-7)
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # the resumed run's metrics file continues the interrupted one's
