"""`focuskit vlm tiny` (build and save the tiny offline VLM) and `focuskit vlm info` (what a checkpoint is)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

vlm_app = typer.Typer(help="VLM checkpoints: build the tiny offline model, inspect a checkpoint.", no_args_is_help=True)


@vlm_app.command("tiny")
def tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the checkpoint to (replaced if it exists)")],
    config: Annotated[
        Path | None, typer.Option("--config", help="TinyVLMConfig YAML, e.g. configs/vlm_tiny.yaml")
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a config key: --set num_layers=4")] = [],  # noqa: B006
) -> None:
    """Build a tiny randomly initialised Qwen2-VL with a locally made tokenizer and save it like any HF checkpoint."""
    from focuskit.models.vlms.tiny import build_tiny_vlm, load_tiny_config

    cfg = load_tiny_config(config, set_)
    bundle = build_tiny_vlm(cfg)
    path = bundle.save(out)
    params = sum(p.numel() for p in bundle.model.parameters())
    typer.echo(f"wrote tiny {cfg.family} ({params:,} parameters, vocab {len(bundle.processor.tokenizer)}): {path}")


@vlm_app.command("info")
def info(model: Annotated[str, typer.Argument(help="Checkpoint directory, LoRA adapter directory, or hub id")]) -> None:
    """Print a checkpoint's family, base model and saved prompt config, reading no weights."""
    from focuskit.core.config import to_dict
    from focuskit.models.vlms.factory import inspect_checkpoint
    from focuskit.models.vlms.prompts import load_prompt_config

    ckpt = inspect_checkpoint(model)
    typer.echo(f"family: {ckpt.family}")
    typer.echo(f"model: {ckpt.source}")
    if ckpt.adapter:
        typer.echo(f"lora adapter: {ckpt.adapter}")
    prompt = load_prompt_config(ckpt.adapter or ckpt.source) if ckpt.is_local else None
    if prompt is None:
        typer.echo("prompt config: none saved (defaults apply)")
    else:
        for key, value in to_dict(prompt).items():
            typer.echo(f"prompt.{key}: {value!r}" if key == "instruction" else f"prompt.{key}: {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(vlm_app, name="vlm")
