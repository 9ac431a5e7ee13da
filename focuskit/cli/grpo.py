"""`focuskit train grpo`: FOCUS stage 2 (GRPO with IoU and format rewards) from an SFT checkpoint, on TRL."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

SUMMARY_KEYS = ("reward", "iou", "format_rate", "frac_reward_zero_std", "reward_std_within", "kl", "entropy")


def grpo(
    config: Annotated[Path, typer.Option("--config", "-c", help="GRPO config YAML, e.g. configs/grpo_tiny.yaml")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Config overrides key=value (any TRL GRPOConfig field or focuskit's): loss_type=dapo beta=0 "
            "resume_from_checkpoint=true lora.r=16"
        ),
    ] = None,
) -> None:
    """Sample G answers per episode, reward IoU + format, and train LoRA adapters with TRL; saves OUTPUT_DIR/final."""
    from accelerate import PartialState

    from focuskit.training.config_io import load_training_config
    from focuskit.training.grpo_config import FocusGRPOConfig
    from focuskit.training.run_grpo import METRICS_FILE, train_grpo

    cfg = load_training_config(FocusGRPOConfig, config, overrides or [])
    result = train_grpo(cfg)
    if not PartialState().is_main_process:  # under accelerate launch / torchrun: one summary, not one per process
        return
    typer.echo(
        f"trained to step {result.global_step} on {result.episodes} episodes; model saved to {result.final_model}"
    )
    if result.dropped_absent:
        typer.echo(f"left out {result.dropped_absent} absent-query episode(s) (absent_episodes is off)")
    for key in SUMMARY_KEYS:
        series = [v for v in result.series(key) if not math.isnan(v)]
        if series:
            n = max(1, len(series) // 10)
            first, last = sum(series[:n]) / n, sum(series[-n:]) / n
            typer.echo(f"{key}: {first:.4f} -> {last:.4f} (mean of first/last {n} logged steps)")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"metrics per logged step: {result.output_dir / METRICS_FILE}")


def register(app: typer.Typer) -> None:
    """Adds `grpo` to the `train` command group (owned by `focuskit.cli.train`)."""
    from focuskit.cli.train import train_app

    train_app.command("grpo")(grpo)
