"""`focuskit explain`: where a VLM's answer tokens look, as attention shares (JSON + bar chart) and image heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def explain(
    model: Annotated[str, typer.Option(help="VLM checkpoint directory (or hub id)")],
    episode: Annotated[Path, typer.Option(help="Episode file: focuskit .jsonl, IPLoc .json, or a folder of them")],
    out: Annotated[Path, typer.Option(help="Folder for attention.json, shares.png and heatmap_*.png")],
    index: Annotated[int, typer.Option(help="Which episode of the file (0-based)")] = 0,
    answer: Annotated[str, typer.Option(help="generated: the model's greedy answer; target: the ground truth")] = (
        "generated"
    ),
    layers: Annotated[str, typer.Option(help="Decoder layers to average: all, first:K, last:K, or 0,1,2")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit when generating")] = 48,
) -> None:
    """Share of the answer tokens' attention on the query image, support images, support boxes and the rest."""
    from focuskit.analysis.attention import explain_episode, write_report
    from focuskit.core.errors import ConfigError, DatasetError
    from focuskit.data.episodes_jsonl import load_episodes
    from focuskit.models.vlms.factory import load_vlm

    if answer not in ("generated", "target"):
        raise ConfigError(f"--answer must be 'generated' or 'target', got {answer!r}")
    episodes = load_episodes(episode)
    if not 0 <= index < len(episodes):
        raise DatasetError(f"--index {index} is out of range: {episode} holds {len(episodes)} episode(s) (0-based)")
    ep = episodes[index]
    bundle = load_vlm(model, dtype="float32", attn_implementation="eager")
    report = explain_episode(bundle, ep, answer=answer, layers=layers, max_new_tokens=max_new_tokens)  # type: ignore[arg-type]
    paths = write_report(report, ep, out)
    typer.echo(f"episode {ep.id} ({ep.k} supports), answer ({answer}): {report.answer!r}")
    for name, value in report.shares.items():
        typer.echo(f"  {name:15s} {value:6.1%}  ({report.token_counts[name]} tokens)")
    typer.echo(f"wrote {len(paths)} files to {out}")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
