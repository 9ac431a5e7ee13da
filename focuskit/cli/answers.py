"""`focuskit eval-answers`: a VLM over a QA benchmark, plain vs PeKit vs oracle, side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from focuskit.cli.tables import print_table
from focuskit.core.errors import ConfigError

if TYPE_CHECKING:
    from focuskit.data.qa import QASet
    from focuskit.memory.store import ConceptMemory

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "summary.png"
CACHE_FILE = "cache.sqlite"


def _check_out(out: Path, plot: Path | None) -> Path:
    """Refuse unusable output paths before any model work; returns the plot path."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out is a folder for results, summary and plot; {out} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror}") from None
    if not _writable(out):
        raise ConfigError(f"the output folder {out} is not writable")
    plot = plot if plot is not None else out / PLOT_FILE
    if plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG: give a .png path, got {plot}")
    if plot.exists() and plot.is_dir():
        raise ConfigError(f"--plot {plot} is a folder")
    return plot


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def _add_missing_concepts(
    mem: ConceptMemory, qa: QASet, root: Path | None, fmt: str | None, split: str | None
) -> list[str]:
    """Add QA concepts absent from the memory from the benchmark's concept folders, named as the questions name
    them. A folder matches a concept when its name, or its name without a '-<category>' suffix (This-Is-My-Img,
    PeKit's folder names), equals the concept's name or an alias, ignoring case and apostrophes."""
    from focuskit.data.qa import concept_key
    from focuskit.data.registry import get_format

    missing = [c for c in qa.concepts() if c not in mem]
    if not missing or root is None:
        return []
    if fmt is None:
        raise ConfigError("--concepts needs --concepts-format (a concept format of `focuskit data formats`)")
    ds = get_format(fmt).open(root, split)
    by_key: dict[str, Any] = {}
    for c in ds.concepts:
        by_key.setdefault(concept_key(c.name), c)
        if "-" in c.name:
            by_key.setdefault(concept_key(c.name.rsplit("-", 1)[0]), c)
    added = []
    for name in missing:
        concept = next((by_key[k] for k in map(concept_key, qa.names_of(name)) if k in by_key), None)
        if concept is None:
            continue
        views = list(concept.references)
        mem.add(
            name, [v.image for v in views], boxes=[v.box for v in views],
            masks=[v.mask if v.box is None else None for v in views], context=concept.context,
        )  # fmt: skip
        added.append(f"{name} ({len(views)} reference view(s) from {concept.name})")
    return added


def eval_answers(
    qa: Annotated[Path, typer.Option("--qa", help="The QA file or benchmark folder")],
    format: Annotated[str, typer.Option("--format", "-f", help="QA format (see docs/answers.md)")],
    out: Annotated[Path, typer.Option(help="Output folder: results.jsonl, summary.json, summary.png, cache")],
    memory: Annotated[Path | None, typer.Option("--memory", "-m", help="Concept memory (needed for pekit)")] = None,
    concepts: Annotated[
        Path | None, typer.Option(help="Concept folders to add missing concepts from (default: the benchmark's)")
    ] = None,
    concepts_format: Annotated[str | None, typer.Option(help="Format of --concepts, e.g. yollava")] = None,
    media_root: Annotated[Path | None, typer.Option(help="Also look for images/videos under this folder")] = None,
    backend: Annotated[
        str, typer.Option(help="hf (local transformers) or openai (any compatible endpoint)")
    ] = "openai",
    model: Annotated[str | None, typer.Option(help="hf: checkpoint or 'tiny'; openai: model name")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: endpoint, e.g. http://localhost:8000/v1")] = None,
    judge_backend: Annotated[str | None, typer.Option(help="Judge backend (default: --backend)")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model (default: --model)")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Judge endpoint (default: --base-url)")] = None,
    clip_model: Annotated[str | None, typer.Option(help="CLIP checkpoint for CLIPScore on captions")] = None,
    modes: Annotated[str, typer.Option(help="Comma-separated subset of plain,pekit,oracle")] = "plain,pekit,oracle",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items")] = None,
    plot: Annotated[Path | None, typer.Option(help="Bar chart PNG (default OUT/summary.png)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Answer length limit")] = None,
    tau: Annotated[float | None, typer.Option(help="Detection threshold (cosine); default from the config")] = None,
    frames: Annotated[int, typer.Option(help="Video: frames sent to a video-capable backend")] = 8,
    cache: Annotated[bool, typer.Option(help="Cache HTTP answers and detections in OUT/cache.sqlite")] = True,
    cache_file: Annotated[Path | None, typer.Option(help="Cache file to use (share it between runs)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    config: Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json's content instead of a table")] = False,
) -> None:
    """Evaluate personalized answers: accuracy (multiple choice), judged accuracy (open), recall (captions)."""
    from dataclasses import replace

    from focuskit.backends.cache import CachedBackend, KeyValueCache
    from focuskit.backends.openai import OpenAIBackend
    from focuskit.cli.concept import open_memory_for
    from focuskit.cli.personalize import make_backend
    from focuskit.core.io import atomic_write_json
    from focuskit.data.qa import read_qaset
    from focuskit.eval.answers import (
        AnswerEvalConfig,
        CachedDetector,
        ResultsFile,
        current_records,
        detector_signature,
        evaluate_answers,
        parse_modes,
        plot_summary,
        summarize,
        summary_rows,
    )
    from focuskit.eval.answers_scoring import CLIPScorer
    from focuskit.personalize.config import load_pekit_config
    from focuskit.personalize.detector import ConceptDetector

    mode_list = parse_modes(modes)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    plot_path = _check_out(out, plot)
    qaset = read_qaset(format, qa, media_root=media_root)
    for line in qaset.report.lines():
        typer.echo(f"skipped: {line}", err=True)
    cfg = load_pekit_config(config)
    generation = cfg.generation if max_new_tokens is None else replace(cfg.generation, max_new_tokens=max_new_tokens)
    run_cfg = AnswerEvalConfig(
        modes=mode_list, limit=limit, generation=generation, template=cfg.prompt, sampling=cfg.video, frames=frames
    )
    items = qaset.items[:limit] if limit else qaset.items
    needs_judge = any(it.kind == "open" for it in items)
    store = KeyValueCache(cache_file or out / CACHE_FILE) if cache else None
    mem = None
    detector = None
    if memory is not None or "pekit" in mode_list:
        if memory is None:
            raise ConfigError("the pekit mode needs --memory (a concept memory; it is created if missing)")
        mem, cfg_mem = open_memory_for(memory, config, None, [], create=True)
        det_cfg = cfg_mem.detector if tau is None else replace(cfg_mem.detector, tau=tau)
        root = concepts if concepts is not None else qaset.concepts_root
        fmt = concepts_format if concepts is not None else qaset.concepts_format
        for line in _add_missing_concepts(mem, qaset, root, fmt, qaset.concepts_split if concepts is None else None):
            typer.echo(f"added {line}", err=True)
        absent = [c for c in qaset.concepts() if c not in mem]
        if absent and "pekit" in mode_list:
            raise ConfigError(
                f"{len(absent)} concept(s) of the QA set are not in the memory {memory} (e.g. {absent[:3]}): add "
                "them with `focuskit concept add`, or pass --concepts with the benchmark's concept folders"
            )
        base_detector = ConceptDetector(mem, config=det_cfg)
        detector = CachedDetector(
            base_detector,
            signature=detector_signature(mem, base_detector),
            store=KeyValueCache(store.path, table="detections") if store is not None else None,
        )
    answerer = make_backend(backend, model, base_url, cfg)
    judge = None
    if needs_judge:
        same = (
            (judge_backend in (None, backend)) and judge_model in (None, model) and judge_base_url in (None, base_url)
        )
        judge = answerer if same else make_backend(judge_backend or backend, judge_model or model,
                                                     judge_base_url or base_url, cfg)  # fmt: skip
    if store is not None:
        answerer_run = CachedBackend(answerer, store) if isinstance(answerer, OpenAIBackend) else answerer
        judge_run = CachedBackend(judge, store) if isinstance(judge, OpenAIBackend) else judge
    else:
        answerer_run, judge_run = answerer, judge
    clip = CLIPScorer.load(clip_model) if clip_model is not None and any(it.kind == "caption" for it in items) else None
    results = ResultsFile(out / RESULTS_FILE)
    try:
        stats = evaluate_answers(
            qaset, answerer_run, results, memory=mem, detector=detector, judge=judge_run, clip=clip, config=run_cfg,
            progress=progress,
        )  # fmt: skip
    finally:
        results.close()
        if mem is not None:
            mem.close()
    ids = {it.id for it in items}
    records = current_records(
        results.records, ids, answerer_run.name, judge_run.name if judge_run is not None else None,
        clip.name if clip is not None else None,
    )  # fmt: skip
    summary = summarize(records, mode_list)

    def counts(b: Any) -> dict[str, int] | None:
        return {"hits": b.hits, "misses": b.misses} if isinstance(b, CachedBackend) else None

    payload = {
        "qa": str(qaset.source), "format": format, "items": len(items), "modes": list(mode_list),
        "answerer": answerer_run.name, "judge": judge_run.name if judge_run is not None else None,
        "clip": clip.name if clip is not None else None, "evaluated": stats.evaluated, "resumed": stats.skipped,
        "answer_cache": counts(answerer_run),
        "judge_cache": counts(judge_run) if judge_run is not answerer_run else None,
        "detections": {"runs": detector.runs, "reused": detector.reused} if detector is not None else None,
        "skipped_items": qaset.report.to_json(), "summary": summary,
    }  # fmt: skip
    atomic_write_json(out / SUMMARY_FILE, payload)
    plot_summary(summary, mode_list, plot_path, title=f"{qaset.name}: {answerer_run.name}")
    if as_json:
        typer.echo(json.dumps(payload))
        return
    from rich.table import Table

    table = Table(title=f"{qaset.name} ({len(items)} items): {answerer_run.name}")
    table.add_column("metric")
    for m in mode_list:
        table.add_column(m, justify="right")
    for label, cells in summary_rows(summary, mode_list):
        table.add_row(label, *cells)
    print_table(table)
    typer.echo(
        f"{stats.evaluated} answer(s) new, {stats.skipped} resumed from {out / RESULTS_FILE}; "
        f"judge: {payload['judge'] or '-'}; summary: {out / SUMMARY_FILE}; plot: {plot_path}"
    )
    if payload["answer_cache"] is not None:
        typer.echo(f"answer cache: {json.dumps(payload['answer_cache'])}")


def register(app: typer.Typer) -> None:
    app.command("eval-answers")(eval_answers)
