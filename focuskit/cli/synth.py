"""`focuskit data synth`: write a seeded synthetic episode set (instance-level look-alikes) with its images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Option(help="Output folder: episodes.jsonl and images/ are written here")],
    episodes: Annotated[int, typer.Option(help="Number of episodes")] = 100,
    shots: Annotated[int, typer.Option(help="Support frames per episode (k)")] = 4,
    seed: Annotated[int, typer.Option(help="Same seed, same files")] = 0,
    image_size: Annotated[int, typer.Option(help="Square frame side in pixels")] = 112,
    absent_rate: Annotated[float, typer.Option(help="Fraction of queries without the target (box null)")] = 0.0,
    objects: Annotated[int, typer.Option(help="Same-shape objects per frame, including the target")] = 3,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
) -> None:
    """Scenes of same-shape objects that differ only in instance details: only matching the supports' instance works."""
    from focuskit.data.synth import SynthConfig, write_synth_dataset

    config = SynthConfig(
        episodes=episodes,
        shots=shots,
        seed=seed,
        image_size=image_size,
        absent_rate=absent_rate,
        objects=objects,
    )
    path = write_synth_dataset(config, out, progress=not quiet)
    typer.echo(f"wrote {episodes} episodes: {path}")


def register(app: typer.Typer) -> None:
    """Adds `synth` to the `data` command group (owned by `focuskit.cli.data`)."""
    from focuskit.cli.data import data_app

    data_app.command("synth")(synth)
