"""`focuskit train sft`: a YAML config plus key=value overrides trains and saves; user mistakes exit 2 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.cli.train import train_app
from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.data.episodes_jsonl import write_episodes

runner = CliRunner()


@pytest.fixture
def config_file(tmp_path: Path, make_image) -> Path:
    rects = [(10, 10, 40, 40), (20, 12, 50, 42), (30, 20, 60, 50)]
    paths = [make_image(f"f{i}.png", size=(80, 64), rect=r, seed=i) for i, r in enumerate(rects)]
    episode = Episode("e0", (Support(paths[0], Box(*rects[0])), Support(paths[1], Box(*rects[1]))), paths[2],
                      Box(*rects[2]))  # fmt: skip
    data = tmp_path / "episodes.jsonl"
    write_episodes([episode, episode], data)
    config = {
        "model": "tiny",
        "tiny": {"num_layers": 2},
        "data": [str(data)],
        "output_dir": str(tmp_path / "run"),
        "attention_loss": {"k": 2},
        "max_steps": 2,
        "save_steps": 2,
        "logging_steps": 1,
        "disable_tqdm": True,
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_sft_runs_and_saves(tmp_path, config_file):
    result = runner.invoke(app, ["train", "sft", "--config", str(config_file), "learning_rate=1e-3"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    assert "attn_loss" in result.output and "lm_loss" in result.output
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attention_loss.lambda=0.1"], "unknown key 'lambda'"),
        (["attention_loss.k=3"], "attention_loss.k = 3 selects more layers than the model's 2 decoder layers"),
        (["data=[missing.jsonl]"], "episode file not found: missing.jsonl"),
        (["learning_rate"], "override must be key=value"),
        (["per_device_train_batchsize=2"], "unknown key 'per_device_train_batchsize'"),
        (["batch_size=2"], "key 'batch_size'"),
        pytest.param(
            ["load_in_4bit=true"],
            "load_in_4bit (QLoRA) needs a CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refusal without a GPU"),
        ),
    ],
)
def test_train_sft_user_errors_exit_2(config_file, args, message):
    result = runner.invoke(app, ["train", "sft", "--config", str(config_file), *args])
    assert result.exit_code == 2
    assert f"focuskit: error: {message}" in result.output


def test_missing_config_file_exits_2(tmp_path):
    result = runner.invoke(app, ["train", "sft", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_train_app_is_shared_for_other_trainers():
    """Other modules (GRPO) add commands to the same `train` group."""
    names = {c.name for c in train_app.registered_commands}
    assert "sft" in names
