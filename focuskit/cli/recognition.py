"""`focuskit eval-recognition`: recognition metrics and a threshold sweep on a concept dataset.

The dataset's concepts go into a temporary memory unless `--memory` is given, so an evaluation never writes into
the user's memory by surprise. With `--memory`, concepts of the same name already there are reused (their stored
views, not the dataset's) and the command says which, since a stale concept of the same name changes the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from focuskit.core.errors import ConfigError

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")]
_FORMAT_ALIASES = {"concepts": ("concept-folders", None), "this-is-my": ("thisismy", None),
                   "thisismy-multi": ("thisismy", "multi")}  # fmt: skip


def _format_and_split(fmt: str, split: str | None) -> tuple[str, str | None]:
    """The registry format and split: aliases (`thisismy-multi` = thisismy, split multi) and concept kinds only."""
    from focuskit.data.registry import FORMATS

    name, alias_split = _FORMAT_ALIASES.get(fmt, (fmt, None))
    concept_formats = sorted(n for n, f in FORMATS.items() if f.kind == "concepts")
    if name not in concept_formats:
        raise ConfigError(f"--format must be a concept dataset format ({', '.join(concept_formats)}), got {fmt!r}")
    chosen = split if split is not None else alias_split
    if chosen is not None and chosen not in FORMATS[name].splits:
        raise ConfigError(f"format {name!r} has splits {', '.join(FORMATS[name].splits)}; got --split {chosen!r}")
    return name, chosen


def eval_recognition(
    dataset: Annotated[Path, typer.Option(help="Concept dataset root")],
    memory: Annotated[
        Path | None,
        typer.Option("--memory", "-m", help="Memory to evaluate in (default: a temporary one, deleted after)"),
    ] = None,
    format: Annotated[
        str, typer.Option(help="concept-folders | myvlm | yollava | thisismy | thisismy-multi | perseg")
    ] = "concept-folders",
    split: Annotated[str | None, typer.Option(help="Dataset split, e.g. multi for thisismy (multi-concept)")] = None,
    multi: Annotated[
        Path | None, typer.Option(help="Multi-concept file (default: DATASET/multi.json if present)")
    ] = None,
    tau: Annotated[float | None, typer.Option(help="Detection threshold (cosine); default from the config")] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics, the sweep and raw scores as JSON")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the threshold sweep plot (PNG)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of a table")] = False,
    config: ConfigOpt = None,
) -> None:
    """Recognition metrics (positive/negative/weighted accuracy, precision, multi-concept) and a tau sweep."""
    import tempfile
    from dataclasses import replace

    from focuskit.core.io import check_output_file

    name, chosen_split = _format_and_split(format, split)
    for path, option in ((out, "--out"), (plot, "--plot")):
        if path is not None:
            check_output_file(path, option=option)
    if not dataset.is_dir():
        raise ConfigError(f"--dataset {dataset} is not a folder")
    from focuskit.personalize.config import load_pekit_config

    cfg = load_pekit_config(config)
    if tau is not None:
        cfg = replace(cfg, detector=replace(cfg.detector, tau=tau))
    from focuskit.data.registry import get_format

    ds = get_format(name).open(dataset, chosen_split)
    multi_path = (
        multi if multi is not None else (dataset / "multi.json" if (dataset / "multi.json").is_file() else None)
    )
    if memory is None:
        with tempfile.TemporaryDirectory(prefix="focuskit-eval-") as tmp:
            payload = _evaluate(ds, Path(tmp) / "memory", cfg, multi_path, as_json, temporary=True)
    else:
        payload = _evaluate(ds, memory, cfg, multi_path, as_json, temporary=False)
    _report(payload, ds.name, cfg.detector.tau, dataset, out, plot, as_json)


def _evaluate(ds: Any, memory: Path, cfg: Any, multi_path: Path | None, as_json: bool, *, temporary: bool) -> Any:
    from focuskit.eval.recognition import load_multi_items, score_dataset
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.detector import ConceptDetector

    items = load_multi_items(multi_path) if multi_path is not None else []
    mem = ConceptMemory(memory, proposer=cfg.proposer, config=cfg.memory, encoder=None, create=True)
    if mem.encoder_name is None:
        mem.close()
        mem = ConceptMemory(memory, encoder=cfg.encoder, proposer=cfg.proposer, config=cfg.memory, create=True)
    added, reused = [], []
    with mem:
        for c in ds.concepts:
            if c.name in mem:
                reused.append(c.name)
                continue
            views = list(c.references)
            report = mem.add(
                c.name, [v.image for v in views], boxes=[v.box for v in views],
                masks=[v.mask if v.box is None else None for v in views], context=c.context,
            )  # fmt: skip
            added.append(c.name)
            if not as_json:
                typer.echo(f"added {c.name!r} from {len(report.used)} reference view(s)", err=True)
        if reused and not as_json:
            typer.echo(
                f"reused {len(reused)} concept(s) already in {memory} (their stored views, not the dataset's): "
                f"{', '.join(repr(n) for n in reused[:10])}{' ...' if len(reused) > 10 else ''}",
                err=True,
            )
        scores = score_dataset(ds, ConceptDetector(mem, config=cfg.detector), multi=items)
    return scores, {"memory": None if temporary else str(memory), "added": added, "reused": reused}


def _report(
    payload: Any, name: str, tau: float, dataset: Path, out: Path | None, plot: Path | None, as_json: bool
) -> None:
    from dataclasses import asdict

    from focuskit.core.io import atomic_write_json
    from focuskit.eval.recognition import best_tau, plot_sweep

    scores, concepts = payload
    at_tau = scores.metrics(tau)
    sweep = scores.sweep()
    best = best_tau(sweep)
    record = {
        "dataset": str(dataset), "tau": tau, "metrics": at_tau.to_json(), "best": best.to_json(),
        "concepts": concepts,
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(record))
    else:
        print_metrics(at_tau, name)
        bw = best.mean["weighted_accuracy"]
        typer.echo(f"best tau on this data: {best.tau:.2f} (weighted accuracy {100 * (bw or 0):.1f}%)")
    if plot is not None:
        plot_sweep(sweep, plot, chosen=tau)
        if not as_json:
            typer.echo(f"sweep plot: {plot}")
    if out is not None:
        rows = [{**asdict(r), "score": r.score if r.score > -1e30 else None} for r in scores.rows]
        atomic_write_json(out, {**record, "sweep": [m.to_json() for m in sweep], "scores": rows})
        if not as_json:
            typer.echo(f"results: {out}")


def print_metrics(m: Any, name: str) -> None:
    from rich.table import Table

    from focuskit.cli.tables import print_table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    splits = [k.removeprefix("negative_accuracy_") for k in m.mean if k.startswith("negative_accuracy_")]
    table = Table(title=f"recognition on {name} at tau={m.tau:.2f}")
    for col in ("concept", "pos", "neg", "recall", "neg acc", *[f"neg {s}" for s in splits], "weighted", "precision"):
        table.add_column(col, justify="right")
    for c in m.per_concept:
        table.add_row(
            c.concept, str(c.positives), str(c.negatives), pct(c.positive_accuracy), pct(c.negative_accuracy),
            *[pct(c.negative_accuracy_by_split.get(s)) for s in splits], pct(c.weighted_accuracy), pct(c.precision),
        )  # fmt: skip
    table.add_row(
        "mean", "", "", pct(m.mean["positive_accuracy"]), pct(m.mean["negative_accuracy"]),
        *[pct(m.mean.get(f"negative_accuracy_{s}")) for s in splits], pct(m.mean["weighted_accuracy"]),
        pct(m.mean["precision"]),
    )  # fmt: skip
    print_table(table)
    if m.multi is not None:
        mm = m.multi
        typer.echo(
            f"multi-concept: both present {pct(mm.both_present)}% of {mm.both_present_count}, "
            f"at least one absent {pct(mm.at_least_one_absent)}% of {mm.at_least_one_absent_count}"
        )


def register(app: typer.Typer) -> None:
    app.command("eval-recognition")(eval_recognition)
