"""`focuskit detect`, `ask`, `eval-recognition` and `serve-vlm`: PeKit on images, videos and datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from focuskit.core.errors import ConfigError
from focuskit.core.image import save_image

if TYPE_CHECKING:
    from focuskit.backends.base import VLMBackend
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.config import PeKitConfig

MemoryOpt = Annotated[Path, typer.Option("--memory", "-m", help="Concept memory directory")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")]
TauOpt = Annotated[float | None, typer.Option(help="Detection threshold (cosine); default from the config")]
EveryOpt = Annotated[int | None, typer.Option("--every-n", help="Video: look at every n-th frame")]
FpsOpt = Annotated[float | None, typer.Option("--fps", help="Video: frames per second to look at (default 2)")]


def _setup(memory: Path, config: Path | None, tau: float | None) -> tuple[ConceptMemory, PeKitConfig, Any]:
    from dataclasses import replace

    from focuskit.memory.store import open_memory
    from focuskit.personalize.config import load_pekit_config
    from focuskit.personalize.detector import ConceptDetector

    cfg = load_pekit_config(config)
    if tau is not None:
        cfg = replace(cfg, detector=replace(cfg.detector, tau=tau))
    mem = open_memory(memory, proposer=cfg.proposer, config=cfg.memory)
    if len(mem) == 0:
        raise ConfigError(f"concept memory {memory} is empty: add a concept first (focuskit concept add ...)")
    return mem, cfg, ConceptDetector(mem, config=cfg.detector)


def _sampling(cfg: PeKitConfig, every_n: int | None, fps: float | None) -> Any:
    from focuskit.personalize.video import SamplingConfig

    if every_n is None and fps is None:
        return cfg.video
    return SamplingConfig(every_n=every_n, per_second=fps, max_frames=cfg.video.max_frames)


def _check_draw(input: Path, draw: Path | None) -> None:
    """Refuse a --draw path we could not write before any model runs: MP4 for a video, an image format otherwise."""
    from focuskit.core.image import image_format_for
    from focuskit.personalize.video import is_video

    if draw is None:
        return
    from focuskit.core.io import check_output_file

    check_output_file(draw, option="--draw")
    if is_video(input):
        if draw.suffix.lower() != ".mp4":
            raise ConfigError(f"--draw for a video writes an MP4: give a .mp4 path, got {draw}")
    else:
        image_format_for(draw, what="drawing")


def detect(
    input: Annotated[Path, typer.Argument(help="Image or video (.mp4, .avi, .mov, ...)")],
    memory: MemoryOpt,
    draw: Annotated[Path | None, typer.Option(help="Write the annotated image (PNG/JPEG) or video (MP4)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: detections per image, or per frame")] = False,
    tau: TauOpt = None,
    every_n: EveryOpt = None,
    fps: FpsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Find the memory's concepts in an image or a video."""
    from focuskit.personalize.video import detect_video, is_video

    _check_draw(input, draw)  # before the memory and the models: a bad --draw costs nothing
    mem, cfg, detector = _setup(memory, config, tau)
    with mem:
        if is_video(input):
            result, _ = detect_video(
                input, detector, sampling=_sampling(cfg, every_n, fps), output=draw, template=cfg.prompt,
                progress=not as_json,
            )  # fmt: skip
            if as_json:
                typer.echo(json.dumps([f.to_json() for f in result.frames]))
            else:
                for f in result.frames:
                    found = ", ".join(f"{n} {s:.2f}" for _, s, n in f.detections) or "-"
                    typer.echo(f"frame {f.index} ({f.time:.2f} s): {found}")
                if result.output is not None:
                    typer.echo(f"annotated video: {result.output} ({len(result.frames)} frames)")
            return
        from focuskit.core.image import load_image
        from focuskit.personalize.prompting import annotate, assign_colors

        image = load_image(input)
        dets = detector.detect(image)
        if as_json:
            typer.echo(json.dumps(dets.to_json()))
        elif len(dets) == 0:
            typer.echo("no concept found")
        else:
            for box, score, name in dets:
                coords = ",".join(f"{c:.0f}" for c in box.to_xyxy())
                typer.echo(f"{name}: box {coords} score {score:.3f}")
        if draw is not None:
            colors = assign_colors(mem, list(dets.names))
            save_image(annotate(image, dets, colors, template=cfg.prompt), draw, what="drawing")
            if not as_json:
                typer.echo(f"drawn: {draw}")


def make_backend(kind: str, model: str | None, base_url: str | None, cfg: PeKitConfig) -> VLMBackend:
    from dataclasses import replace

    if kind == "hf":
        if model is None:
            raise ConfigError(
                "--backend hf needs --model (a checkpoint directory, a hub id, or 'tiny' for the test model)"
            )
        from focuskit.backends.hf import HFBackend

        return HFBackend.load(model)
    if kind == "openai":
        from focuskit.backends.openai import OpenAIBackend

        oc = cfg.openai
        if base_url is not None:
            oc = replace(oc, base_url=base_url)
        if model is not None:
            oc = replace(oc, model=model)
        return OpenAIBackend(oc)
    raise ConfigError(f"--backend must be hf or openai, got {kind!r}")


def ask(
    input: Annotated[Path, typer.Argument(help="Image or video")],
    question: Annotated[str, typer.Argument(help="Your question, e.g. 'What is Bruno doing?'")],
    memory: MemoryOpt,
    backend: Annotated[
        str, typer.Option(help="hf (local transformers) or openai (any compatible endpoint)")
    ] = "openai",
    model: Annotated[str | None, typer.Option(help="hf: checkpoint or 'tiny'; openai: model name")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: endpoint, e.g. http://localhost:8000/v1")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Answer length limit")] = None,
    draw: Annotated[Path | None, typer.Option(help="Write what the VLM saw (annotated image or MP4)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON {answer, detections, prompt}")] = False,
    tau: TauOpt = None,
    every_n: EveryOpt = None,
    fps: FpsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask a VLM about an image or video; your concepts are found, marked and called by name."""
    from dataclasses import replace

    from focuskit.personalize.answer import ask as ask_image
    from focuskit.personalize.video import ask_video, is_video

    mem, cfg, detector = _setup(memory, config, tau)
    options = cfg.generation if max_new_tokens is None else replace(cfg.generation, max_new_tokens=max_new_tokens)
    _check_draw(input, draw)
    vlm = make_backend(backend, model, base_url, cfg)
    with mem:
        if is_video(input):
            va = ask_video(
                input, question, mem, vlm, detector=detector, sampling=_sampling(cfg, every_n, fps), output=draw,
                template=cfg.prompt, options=options,
            )  # fmt: skip
            payload: dict[str, Any] = {
                "answer": va.text, "prompt": va.prompt, "frames": [f.to_json() for f in va.result.frames],
            }  # fmt: skip
        else:
            ans = ask_image(input, question, mem, vlm, detector=detector, template=cfg.prompt, options=options)
            if draw is not None:
                save_image(ans.annotated_image, draw, what="drawing")
            payload = {"answer": ans.text, "prompt": ans.prompt, "detections": ans.detections.to_json()}
    if as_json:
        typer.echo(json.dumps(payload))
        return
    typer.echo(payload["answer"])
    if draw is not None:
        typer.echo(f"drawn: {draw}", err=True)


def eval_recognition(
    dataset: Annotated[Path, typer.Option(help="Concept dataset root")],
    memory: MemoryOpt,
    format: Annotated[
        str, typer.Option(help="concept-folders | myvlm | yollava | thisismy | perseg")
    ] = "concept-folders",
    multi: Annotated[
        Path | None, typer.Option(help="Multi-concept file (default: DATASET/multi.json if present)")
    ] = None,
    tau: TauOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics, the sweep and raw scores as JSON")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the threshold sweep plot (PNG)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Recognition metrics (positive/negative/weighted accuracy, precision, multi-concept) and a tau sweep.

    Concepts of the dataset missing from the memory are first added from the dataset's reference views.
    """
    from dataclasses import asdict, replace

    from focuskit.cli.concept import open_memory_for
    from focuskit.core.io import atomic_write_json
    from focuskit.eval.recognition import best_tau, load_multi_items, plot_sweep, score_dataset
    from focuskit.personalize.detector import ConceptDetector

    ds = _read_dataset(dataset, format)
    mem, cfg = open_memory_for(memory, config, None, [], create=True)
    if tau is not None:
        cfg = replace(cfg, detector=replace(cfg.detector, tau=tau))
    multi_path = (
        multi if multi is not None else (dataset / "multi.json" if (dataset / "multi.json").is_file() else None)
    )
    items = load_multi_items(multi_path) if multi_path is not None else []
    with mem:
        for c in ds.concepts:
            if c.name in mem:
                continue
            views = list(c.references)
            report = mem.add(
                c.name, [v.image for v in views], boxes=[v.box for v in views],
                masks=[v.mask if v.box is None else None for v in views], context=c.context,
            )  # fmt: skip
            typer.echo(f"added {c.name!r} from {len(report.used)} reference view(s)")
        scores = score_dataset(ds, ConceptDetector(mem, config=cfg.detector), multi=items)
    at_tau = scores.metrics(cfg.detector.tau)
    sweep = scores.sweep()
    best = best_tau(sweep)
    _print_metrics(at_tau, ds.name)
    bw = best.mean["weighted_accuracy"]
    typer.echo(f"best tau on this data: {best.tau:.2f} (weighted accuracy {100 * (bw or 0):.1f}%)")
    if plot is not None:
        plot_sweep(sweep, plot, chosen=cfg.detector.tau)
        typer.echo(f"sweep plot: {plot}")
    if out is not None:
        atomic_write_json(
            out,
            {
                "dataset": str(dataset), "tau": cfg.detector.tau, "metrics": at_tau.to_json(),
                "best": best.to_json(), "sweep": [m.to_json() for m in sweep],
                "scores": [{**asdict(r), "score": r.score if r.score > -1e30 else None} for r in scores.rows],
            },
        )  # fmt: skip
        typer.echo(f"results: {out}")


_FORMAT_ALIASES = {"concepts": "concept-folders", "this-is-my": "thisismy"}


def _read_dataset(root: Path, fmt: str) -> Any:
    """Any concept-kind format of the dataset registry (the names `focuskit data formats` lists), plus old aliases."""
    from focuskit.data.registry import FORMATS, get_format

    name = _FORMAT_ALIASES.get(fmt, fmt)
    concept_formats = sorted(n for n, f in FORMATS.items() if f.kind == "concepts")
    if name not in concept_formats:
        raise ConfigError(f"--format must be a concept dataset format ({', '.join(concept_formats)}), got {fmt!r}")
    return get_format(name).open(root)


def _print_metrics(m: Any, name: str) -> None:
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
    Console().print(table)
    if m.multi is not None:
        mm = m.multi
        typer.echo(
            f"multi-concept: both present {pct(mm.both_present)}% of {mm.both_present_count}, "
            f"at least one absent {pct(mm.at_least_one_absent)}% of {mm.at_least_one_absent_count}"
        )


def serve_vlm(
    model: Annotated[str, typer.Option(help="Checkpoint directory, hub id, or 'tiny' (offline random-weight model)")],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    name: Annotated[str, typer.Option(help="Model name reported by /v1/models")] = "focuskit",
) -> None:
    """Serve a local VLM as an OpenAI-compatible /v1/chat/completions endpoint."""
    from focuskit.backends.hf import HFBackend
    from focuskit.backends.openai_server import serve

    backend = HFBackend.load(model)
    typer.echo(f"serving {backend.name} at http://{host}:{port}/v1 (model name {name!r})", err=True)
    serve(backend, host=host, port=port, model_name=name)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)
    app.command("ask")(ask)
    app.command("eval-recognition")(eval_recognition)
    app.command("serve-vlm")(serve_vlm)
