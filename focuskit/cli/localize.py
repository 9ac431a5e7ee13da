"""`focuskit localize` and `focuskit eval`: one query, or a whole episode file, through any engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from focuskit.cli.tables import print_table
from focuskit.core.errors import ConfigError
from focuskit.core.io import atomic_write_json, check_output_file

EngineOpt = Annotated[str, typer.Option("--engine", "-e", help="matching | template | vlm")]
ModelOpt = Annotated[str | None, typer.Option(help="VLM checkpoint (local path or hub id) for --engine vlm")]
EncoderOpt = Annotated[str | None, typer.Option(help="Feature encoder for --engine matching")]
TauOpt = Annotated[float | None, typer.Option(help="Absent threshold: below this score the answer is 'not present'")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Engine config YAML")]


def engine_options(model: str | None, encoder: str | None, tau: float | None, config: Path | None) -> dict[str, Any]:
    """Only the options the user gave, so each engine's own defaults apply otherwise."""
    given = {"model": model, "encoder": encoder, "tau": tau, "config": config}
    return {k: v for k, v in given.items() if v is not None}


def parse_shots(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shots = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots must be comma-separated integers like 1,2,4, got {text!r}") from None
    bad = [k for k in shots if k < 1]
    if bad or not shots:
        raise ConfigError(f"shots must be >= 1, got {text!r}")
    return shots


def localize(
    query: Annotated[Path, typer.Option(help="Image to search")],
    support: Annotated[list[Path], typer.Option(help="Support image (repeat; one --box each, in order)")] = [],  # noqa: B006
    box: Annotated[list[str], typer.Option(help="Box x1,y1,x2,y2 in pixels of the matching --support")] = [],  # noqa: B006
    engine: EngineOpt = "matching",
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    tau: TauOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON {box, score}")] = False,
    draw: Annotated[Path | None, typer.Option(help="Write the query with the found box drawn")] = None,
    max_instances: Annotated[
        int | None, typer.Option("--max-instances", min=1, help="Several instances (matching engine): up to N boxes")
    ] = None,
) -> None:
    """Find the supports' object in QUERY; print its box and score, or 'not present'."""
    from focuskit.core.box import parse_box_arg
    from focuskit.core.episode import Support, validate_supports
    from focuskit.core.image import image_format_for, load_image, save_image
    from focuskit.localizers import create_localizer

    if not support:
        raise ConfigError("no supports given: pass at least one --support IMG --box x1,y1,x2,y2 (k >= 1)")
    if len(support) != len(box):
        raise ConfigError(f"got {len(support)} --support and {len(box)} --box: give exactly one box per support")
    if draw is not None:
        image_format_for(draw, what="drawing")
        check_output_file(draw, option="--draw")
    options = engine_options(model, encoder, tau, config)
    if max_instances is not None:
        if engine != "matching":
            raise ConfigError(f"--max-instances needs --engine matching (the {engine} engine returns one box)")
        options["max_instances"] = max_instances
    supports = validate_supports([Support(p, parse_box_arg(b)) for p, b in zip(support, box, strict=True)])
    query_image = load_image(query, what="query image")
    localizer = create_localizer(engine, **options)
    pred = localizer.localize(supports, query_image)
    instances = _instances(pred)
    parse_failed = bool(pred.meta.get("parse_failed"))
    if as_json:
        record = pred.to_json()
        if max_instances is not None:
            record["instances"] = [{"box": b.as_list(), "score": round(s, 4)} for b, s in instances]
        if parse_failed:
            record["error"] = f"could not read the model's answer: {pred.meta.get('parse', '')}"
        typer.echo(json.dumps(record))
    elif parse_failed:
        # "Not present" would be a lie here: the model answered, we could not read it as a box.
        reason, text = pred.meta.get("parse", "unparseable"), pred.meta.get("text", "")
        typer.echo(f"could not read the model's answer ({reason}): {text!r}")
    elif pred.box is None:
        typer.echo(f"not present (score {pred.score:.3f})")
    else:
        for i, (b, s) in enumerate(instances):
            x1, y1, x2, y2 = b.as_list(1)
            typer.echo(f"{'box' if i == 0 else f'instance {i + 1}: box'} {x1},{y1},{x2},{y2} score {s:.3f}")
    if draw is not None:
        from focuskit.viz.draw import draw_boxes

        boxes = [b for b, _ in instances]
        labels = [f"{s:.2f}" for _, s in instances]
        out = draw_boxes(query_image, boxes, labels, [(230, 25, 75)] * len(boxes))
        save_image(out, draw, what="drawing")
        if not as_json:
            typer.echo(f"drawn: {draw}")


def _instances(pred: Any) -> list[tuple[Any, float]]:
    """The prediction's box and its further instances, each with its score (the best box first)."""
    if pred.box is None:
        return []
    extra = list(pred.meta.get("extra_scores", [])) or [float(pred.score)] * len(pred.extra_boxes)
    return [(pred.box, float(pred.score)), *zip(pred.extra_boxes, (float(s) for s in extra), strict=False)]


def evaluate_cmd(
    episodes: Annotated[Path, typer.Option(help="Episode file: focuskit .jsonl, IPLoc .json, or a folder of them")],
    engine: EngineOpt = "matching",
    shots: Annotated[str | None, typer.Option(help="Comma-separated k values, e.g. 1,2,4")] = None,
    model: ModelOpt = None,
    encoder: EncoderOpt = None,
    tau: TauOpt = None,
    config: ConfigOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N episodes")] = None,
    out: Annotated[Path | None, typer.Option(help="Write per-episode records and the summary as JSON")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary per k as JSON instead of a table")] = False,
) -> None:
    """mIoU per k (strict: a miss or a wrong 'absent' scores 0), rejection rates, and throughput."""
    from focuskit.data.episodes_jsonl import load_episodes
    from focuskit.eval.runner import evaluate
    from focuskit.localizers import create_localizer

    shot_list = parse_shots(shots)
    if out is not None:
        check_output_file(out, option="--out")  # before the evaluation, not after it
    eps = load_episodes(episodes)
    if limit is not None:
        eps = eps[:limit]
    localizer = create_localizer(engine, **engine_options(model, encoder, tau, config))
    result = evaluate(localizer, eps, shot_list)
    if as_json:
        record = result.to_json()
        typer.echo(json.dumps({"engine": engine, "episodes": str(episodes), "summary": record["summary"],
                               "skipped": record["skipped"]}))  # fmt: skip
        if out is not None:
            atomic_write_json(out, {"engine": engine, "episodes": str(episodes), **record})
        return

    from rich.table import Table

    table = Table(title=f"{engine} on {episodes.name} ({len(eps)} episodes)")
    for col in ("k", "episodes", "mIoU", "Acc@0.5", "absent rejected", "present rejected", "episodes/s"):
        table.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for s in result.summaries:
        table.add_row(
            str(s.k), str(s.episodes), f"{100 * s.miou:.1f}", pct(s.acc_at_50),
            pct(s.absent_rejected), pct(s.present_rejected), f"{s.episodes_per_s:.2f}",
        )  # fmt: skip
    print_table(table)
    for k, n in result.skipped.items():
        if n:
            typer.echo(f"k={k}: skipped {n} episode(s) with fewer than {k} supports")
    if out is not None:
        atomic_write_json(out, {"engine": engine, "episodes": str(episodes), **result.to_json()})
        typer.echo(f"results: {out}")


def register(app: typer.Typer) -> None:
    app.command("localize")(localize)
    app.command("eval")(evaluate_cmd)
