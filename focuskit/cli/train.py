"""`focuskit train ...`: training commands. `train_app` is module-level so other modules can add commands to it
(`focuskit.cli` modules for GRPO register `grpo` on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(
    name="train",
    help="Fine-tune a VLM for in-context localization (SFT with the attention loss, GRPO).",
    no_args_is_help=True,
)


@train_app.command("sft")
def sft(
    config: Annotated[Path, typer.Option("--config", "-c", help="SFT config YAML, e.g. configs/sft_tiny.yaml")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Overrides key=value (TrainingArguments fields too), dotted for sections: attention_loss.weight=0.25"
        ),
    ] = None,
) -> None:
    """Supervised fine-tuning with LM loss + lambda * bounding-box attention loss; saves OUTPUT_DIR/final."""
    from focuskit.training.config_io import load_training_config
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import SFTConfig

    cfg = load_training_config(SFTConfig, config, overrides or [])
    result = train_sft(cfg)
    lm = result.series("lm_loss")
    attn = result.series("attn_loss")
    margin = result.series("attn_margin")
    typer.echo(f"trained {result.global_step} steps; model saved to {result.final_model}")
    if lm:
        typer.echo(f"lm_loss {lm[0]:.4f} -> {lm[-1]:.4f}")
    if attn and margin:
        typer.echo(f"attn_loss {attn[0]:.4g} -> {attn[-1]:.4g}, mean margin {margin[0]:.3g} -> {margin[-1]:.3g}")
    if result.attention_skipped:
        typer.echo(f"attention loss skipped {result.attention_skipped} example(s) without box or query tokens")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
