"""`focuskit data ...`: benchmark layouts into episode files, and dataset statistics.

`data_app` is the `data` command group. Other modules add their own commands to it (`data synth`) by importing
`data_app` and decorating, so its name and object stay stable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from focuskit.core.errors import ConfigError, DatasetError

data_app = typer.Typer(
    name="data",
    help="Dataset adapters: turn benchmark layouts (GOT-10k, LaSOT, TAO, PerSeg, PerMIRS, ...) into k-shot episodes.",
    no_args_is_help=True,
)

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Dataset format (see `focuskit data formats`)")]
RootOpt = Annotated[Path, typer.Option(help="Dataset root folder (or episode file for jsonl/iploc)")]
SplitOpt = Annotated[str | None, typer.Option(help="The format's official split (got10k: train|val|test, ...)")]


def _shots(text: str) -> list[int]:
    from focuskit.cli.localize import parse_shots

    return parse_shots(text) or []


def _fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--fractions must be three numbers train,val,test like 0.5,0,0.5; got {text!r}") from None


def _episode_config(config: Path | None, given: dict[str, Any]) -> Any:
    """The YAML config (if any) with the flags the user gave on top."""
    from focuskit.core.config import load_config
    from focuskit.data.episode_builder import EpisodeConfig

    base = load_config(EpisodeConfig, config)
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


@data_app.command("formats")
def formats_cmd() -> None:
    """List the dataset formats and their on-disk layouts."""
    from focuskit.data.registry import FORMATS

    for f in FORMATS.values():
        typer.echo(f"{f.name:16s} {f.kind:9s} splits: {'|'.join(f.splits):16s} {f.layout}")


@data_app.command("episodes")
def episodes_cmd(
    format_: FormatOpt,
    root: RootOpt,
    out: Annotated[Path, typer.Option(help="Output JSONL; several k give NAME.k1.jsonl, NAME.k2.jsonl, ...")],
    shots: Annotated[str | None, typer.Option(help="Comma-separated k values (default 1,2,4)")] = None,
    split: SplitOpt = None,
    negatives: Annotated[int | None, typer.Option(help="Negative episodes per k (query from another sequence)")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for partitions and negatives (default 0)")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N sequences/concepts")] = None,
    max_side: Annotated[int | None, typer.Option(help="Downscale images to this longer side; boxes follow")] = None,
    hf_out: Annotated[Path | None, typer.Option(help="Also save a Hugging Face `datasets` folder (per k)")] = None,
    stats_png: Annotated[Path | None, typer.Option(help="Write box-size / objects-per-image histograms")] = None,
    stats_json: Annotated[Path | None, typer.Option(help="Write the statistics as JSON")] = None,
    partition: Annotated[str | None, typer.Option(help="none | random | category (category-disjoint)")] = None,
    part: Annotated[str | None, typer.Option(help="Part of the partition to use: train | val | test")] = None,
    fractions: Annotated[str | None, typer.Option(help="Partition fractions train,val,test")] = None,
    check_images: Annotated[
        bool | None, typer.Option("--check-images/--no-check-images", help="Read chosen frames' headers (default on)")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="EpisodeConfig YAML; flags override it")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars")] = False,
) -> None:
    """Build the papers' k-shot episodes from a dataset in its official layout and write them to JSONL."""
    from focuskit.core.io import atomic_write_json
    from focuskit.data import episode_builder as eb
    from focuskit.data.export import ImageShrinker, hf_output_dirs, output_paths, write_hf_dataset, write_jsonl
    from focuskit.data.registry import get_format
    from focuskit.data.sequences import DataReport

    cfg = _episode_config(
        config,
        {
            "shots": _shots(shots) if shots is not None else None,
            "negatives": negatives,
            "seed": seed,
            "limit": limit,
            "partition": partition,
            "part": part,
            "fractions": _fractions(fractions) if fractions is not None else None,
            "check_images": check_images,
        },
    )
    fmt = get_format(format_)
    report = DataReport()
    dataset = fmt.open(root, split, report)
    progress = not quiet
    if fmt.kind == "sequences":
        result = eb.build_sequence_episodes(dataset, cfg, progress=progress)
    elif fmt.kind == "concepts":
        result = eb.build_concept_episodes(dataset, cfg, report=report, progress=progress)
    else:
        result = eb.build_from_episodes(dataset, cfg, source=fmt.name)
    stats = result.stats
    if result.total() == 0:
        reasons = "; ".join(
            f"k={k}: " + ", ".join(f"{n} {r}" for r, n in sorted(c.items())) for k, c in stats.skipped.items() if c
        )
        issues = "; ".join(stats.report.lines())
        raise DatasetError(
            f"no episode could be built from {root} ({fmt.name}, {stats.units} sequence(s)/concept(s))"
            + (f"; skipped {reasons}" if reasons else "")
            + (f"; issues: {issues}" if issues else "")
        )
    shrinker = ImageShrinker(max_side, out.with_name(f"{out.stem}_images"))
    for k, path in output_paths(out, cfg.shots).items():
        episodes = result.by_k[k]
        if not episodes:
            typer.echo(f"k={k}: no episodes, {path} not written")
            continue
        n = write_jsonl(episodes, path, shrinker=shrinker, progress=progress)
        typer.echo(f"k={k}: wrote {n} episode(s) to {path}")
    if hf_out is not None:
        for k, path in hf_output_dirs(hf_out, cfg.shots).items():
            if result.by_k[k]:
                n = write_hf_dataset(result.by_k[k], path, max_side=max_side, progress=progress)
                typer.echo(f"k={k}: saved {n} row(s) as a datasets folder in {path}")
    for line in stats.lines():
        typer.echo(line)
    if stats_png is not None:
        eb.plot_statistics(stats, stats_png)
        typer.echo(f"statistics plot: {stats_png}")
    if stats_json is not None:
        atomic_write_json(stats_json, stats.to_json())
        typer.echo(f"statistics: {stats_json}")


@data_app.command("stats")
def stats_cmd(
    format_: FormatOpt,
    root: RootOpt,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Look at only the first N sequences")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars")] = False,
) -> None:
    """Counts over a dataset: sequences, frames, usable frames, categories, concepts, skipped items."""
    from focuskit.data import episode_builder as eb
    from focuskit.data.registry import get_format
    from focuskit.data.sequences import DataReport

    fmt = get_format(format_)
    report = DataReport()
    dataset = fmt.open(root, split, report)
    if fmt.kind == "sequences":
        summary = eb.summarize_sequences(dataset, limit=limit, progress=not quiet)
    elif fmt.kind == "concepts":
        summary = eb.summarize_concepts(dataset, report)
    else:
        summary = eb.summarize_episodes(dataset[:limit] if limit is not None else dataset)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    issues = summary.pop("issues", {})
    for key, value in summary.items():
        typer.echo(f"{key}: {value}")
    for reason, info in issues.items():
        example = f" (e.g. {info['examples'][0]})" if info["examples"] else ""
        typer.echo(f"skipped/repaired {reason}: {info['count']}{example}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
