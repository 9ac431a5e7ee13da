"""`focuskit detect`, `ask` and `serve-vlm`: PeKit on images (one, many, folders, globs) and videos.

Every argument is checked before the memory or a model is loaded (inputs exist, output paths are writable, the
question is not empty, the VLM endpoint answers), so a mistake costs a fraction of a second, not a model load.
Several images share one memory, one detector and one VLM: the models load once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from focuskit.cli.inputs import expand_inputs, single_video
from focuskit.cli.results import describe, draw_name, drawing, image_result
from focuskit.core.errors import ConfigError

if TYPE_CHECKING:
    from focuskit.backends.base import VLMBackend
    from focuskit.exports import ImageResult
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.config import PeKitConfig

MemoryOpt = Annotated[Path, typer.Option("--memory", "-m", help="Concept memory directory")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")]
TauOpt = Annotated[float | None, typer.Option(help="Detection threshold (cosine); default from the config")]
EveryOpt = Annotated[int | None, typer.Option("--every-n", help="Video: look at every n-th frame")]
FpsOpt = Annotated[float | None, typer.Option("--fps", help="Video: frames per second to look at (default 2)")]
InputsArg = Annotated[list[str], typer.Argument(help="Images, folders of images, glob patterns, or one video")]
MaxInstancesOpt = Annotated[
    int | None, typer.Option("--max-instances", min=1, help="Boxes per concept and image (default 1)")
]
SegmentOpt = Annotated[bool, typer.Option("--segment", help="Also return a mask per detection (drawn, exported)")]
SegmenterOpt = Annotated[
    str | None, typer.Option(help="Segmenter for --segment: grabcut (default, no weights), box, sam, grounded_sam")
]
OutOpt = Annotated[Path | None, typer.Option(help="Write all results: .jsonl, .csv or .json (COCO), by extension")]
DrawDirOpt = Annotated[Path | None, typer.Option("--draw-dir", help="Write each annotated image into this folder")]
RecursiveOpt = Annotated[bool, typer.Option(help="Folders: also the images in their sub-folders")]


# --- argument checks (no model code imported) -----------------------------------------------------------------
def _config(config: Path | None, tau: float | None, max_instances: int | None, segment: str | None) -> PeKitConfig:
    """The config file's settings with the flags given on top (`segment`: a segmenter name, or None to keep)."""
    from focuskit.personalize.config import load_pekit_config

    cfg = load_pekit_config(config)
    det = cfg.detector
    if tau is not None:
        det = replace(det, tau=tau)
    if max_instances is not None:
        det = replace(det, max_per_concept=max_instances)
    if segment is not None:
        det = replace(det, segmenter=segment)
    return replace(cfg, detector=det)


def _check_outputs(
    paths: list[Path], video: Path | None, draw: Path | None, draw_dir: Path | None, out: Path | None
) -> None:
    """Refuse outputs we could not write before any model runs."""
    from focuskit.core.image import image_format_for
    from focuskit.core.io import check_output_dir, check_output_file

    if draw is not None:
        if len(paths) > 1:
            raise ConfigError(f"--draw writes one image; for {len(paths)} inputs use --draw-dir FOLDER")
        check_output_file(draw, option="--draw")
        if video is not None:
            if draw.suffix.lower() != ".mp4":
                raise ConfigError(f"--draw for a video writes an MP4: give a .mp4 path, got {draw}")
        else:
            image_format_for(draw, what="drawing")
    if draw_dir is not None:
        if video is not None:
            raise ConfigError("--draw-dir is for images; for a video use --draw OUT.mp4")
        check_output_dir(draw_dir, option="--draw-dir")
    if out is not None:
        from focuskit.exports import format_for

        if video is not None:
            raise ConfigError("--out is for images; for a video use --json (one line per frame)")
        format_for(out)
        check_output_file(out, option="--out")


def _open(memory: Path, cfg: PeKitConfig) -> tuple[ConceptMemory, Any]:
    from focuskit.memory.store import open_memory
    from focuskit.personalize.detector import ConceptDetector

    mem = open_memory(memory, proposer=cfg.proposer, config=cfg.memory)
    if len(mem) == 0:
        mem.close()
        raise ConfigError(f"concept memory {memory} is empty: add a concept first (focuskit concept add ...)")
    return mem, ConceptDetector(mem, config=cfg.detector)


def _sampling(cfg: PeKitConfig, every_n: int | None, fps: float | None) -> Any:
    from focuskit.personalize.config import SamplingConfig

    if every_n is None and fps is None:
        return cfg.video
    return SamplingConfig(every_n=every_n, per_second=fps, max_frames=cfg.video.max_frames)


def _bar(paths: list[Path], what: str, quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(paths, desc=what, unit="image", disable=quiet or len(paths) < 2)


# --- detect ---------------------------------------------------------------------------------------------------
def detect(
    inputs: InputsArg,
    memory: MemoryOpt,
    out: OutOpt = None,
    draw: Annotated[Path | None, typer.Option(help="One input: write the annotated image or video (MP4)")] = None,
    draw_dir: DrawDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line per image (or per frame)")] = False,
    tau: TauOpt = None,
    max_instances: MaxInstancesOpt = None,
    segment: SegmentOpt = False,
    segmenter: SegmenterOpt = None,
    recursive: RecursiveOpt = False,
    every_n: EveryOpt = None,
    fps: FpsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Find the memory's concepts in images (files, folders, globs) or a video; near misses are reported too."""
    paths = expand_inputs(inputs, recursive=recursive)
    video = single_video(paths)
    _check_outputs(paths, video, draw, draw_dir, out)
    if segmenter is not None and not segment:
        raise ConfigError("--segmenter needs --segment")
    cfg = _config(config, tau, max_instances, (segmenter or "grabcut") if segment else None)
    from focuskit.models.encoders.backend import use_encoder_backend

    # Query only: the encoder may run exported to ONNX (no torch import; same tag and embeddings, see
    # focuskit/models/encoders/onnx_runtime.py). FOCUSKIT_ENCODER_BACKEND=torch keeps the reference.
    with use_encoder_backend("auto"):
        mem, detector = _open(memory, cfg)
        with mem:
            if video is not None:
                _detect_video(video, detector, cfg, draw, as_json, every_n, fps)
                return
            _detect_images(paths, mem, detector, cfg, out, draw, draw_dir, as_json)


def _detect_images(
    paths: list[Path], mem: ConceptMemory, detector: Any, cfg: PeKitConfig, out: Path | None, draw: Path | None,
    draw_dir: Path | None, as_json: bool,
) -> None:  # fmt: skip
    from focuskit.core.image import load_image, save_image
    from focuskit.exports import jsonl_record, write_detections

    order = mem.names()
    results: list[ImageResult] = []
    taken: set[str] = set()
    tau = cfg.detector.tau
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    for path in _bar(paths, "detect", quiet=False):
        image = load_image(path)
        dets = detector.detect(image)
        result = image_result(path, image, dets)
        results.append(result)
        if as_json:
            typer.echo(json.dumps(jsonl_record(result, order)))
        else:
            prefix = f"{path}: " if len(paths) > 1 else ""
            for line in describe(dets, tau):
                typer.echo(prefix + line)
        target = draw if draw is not None else (draw_dir / draw_name(path, taken) if draw_dir else None)
        if target is not None:
            save_image(drawing(image, dets, mem, cfg), target, what="drawing")
            if not as_json and draw is not None:
                typer.echo(f"drawn: {target}")
    if draw_dir is not None and not as_json:
        typer.echo(f"drawn: {len(paths)} image(s) in {draw_dir}", err=True)
    if out is not None:
        write_detections(results, out, concepts=order)
        found = sum(len(r.detections) for r in results)
        typer.echo(f"results: {out} ({len(results)} image(s), {found} detection(s))", err=True)


def _detect_video(
    video: Path, detector: Any, cfg: PeKitConfig, draw: Path | None, as_json: bool, every_n: int | None,
    fps: float | None,
) -> None:  # fmt: skip
    from focuskit.personalize.video import detect_video

    result, _ = detect_video(
        video, detector, sampling=_sampling(cfg, every_n, fps), output=draw, template=cfg.prompt, progress=not as_json
    )
    if as_json:
        typer.echo(json.dumps([f.to_json() for f in result.frames]))
        return
    for f in result.frames:
        found = ", ".join(f"{n} {s:.2f}" for _, s, n in f.detections) or "-"
        typer.echo(f"frame {f.index} ({f.time:.2f} s): {found}")
    if result.output is not None:
        typer.echo(f"annotated video: {result.output} ({len(result.frames)} frames)")


# --- ask ------------------------------------------------------------------------------------------------------
def make_backend(kind: str, model: str | None, base_url: str | None, cfg: PeKitConfig) -> VLMBackend:
    if kind == "hf":
        from focuskit.backends.hf import HFBackend

        return HFBackend.load(_hf_model(model))
    if kind == "openai":
        from focuskit.backends.openai import OpenAIBackend

        return OpenAIBackend(_openai_config(model, base_url, cfg))
    raise ConfigError(f"--backend must be hf or openai, got {kind!r}")


def _hf_model(model: str | None) -> str:
    if model is None:
        raise ConfigError("--backend hf needs --model (a checkpoint directory, a hub id, or 'tiny' for the test model)")
    return model


def _openai_config(model: str | None, base_url: str | None, cfg: PeKitConfig) -> Any:
    oc = cfg.openai
    if base_url is not None:
        oc = replace(oc, base_url=base_url)
    if model is not None:
        oc = replace(oc, model=model)
    return oc


def check_reachable(base_url: str, timeout: float) -> None:
    """A TCP connect to the endpoint's host and port, so an unreachable VLM fails in a second with the way out,
    instead of after the models load and the client's retries run out."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise ConfigError(
        f"no VLM answers at {base_url} ({reason}): start one with `focuskit serve-vlm --model CHECKPOINT` (or "
        "--model tiny to try the pipeline), point --base-url at your endpoint, or answer in-process with "
        "`--backend hf --model CHECKPOINT`"
    )


def ask(
    inputs: InputsArg,
    question: Annotated[str, typer.Argument(help="Your question, e.g. 'What is Bruno doing?'")],
    memory: MemoryOpt,
    backend: Annotated[
        str, typer.Option(help="hf (local transformers) or openai (any compatible endpoint)")
    ] = "openai",
    model: Annotated[str | None, typer.Option(help="hf: checkpoint or 'tiny'; openai: model name")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: endpoint, e.g. http://localhost:8000/v1")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Answer length limit")] = None,
    draw: Annotated[Path | None, typer.Option(help="One input: write what the VLM saw (image or MP4)")] = None,
    draw_dir: Annotated[Path | None, typer.Option("--draw-dir", help="Write what the VLM saw, per image")] = None,
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON per image {answer, prompt, detections}")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print the exact prompt and where the prompted image is")
    ] = False,
    tau: TauOpt = None,
    max_instances: MaxInstancesOpt = None,
    recursive: RecursiveOpt = False,
    every_n: EveryOpt = None,
    fps: FpsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask a VLM about images or a video; your concepts are found, marked and called by name."""
    if not question.strip():
        raise ConfigError("the question is empty: ask something about the image, e.g. 'What is Bruno doing?'")
    if backend not in ("hf", "openai"):
        raise ConfigError(f"--backend must be hf or openai, got {backend!r}")
    paths = expand_inputs(inputs, recursive=recursive)
    video = single_video(paths)
    _check_outputs(paths, video, draw, draw_dir, out)
    cfg = _config(config, tau, max_instances, None)
    if backend == "hf":
        _hf_model(model)
    else:
        oc = _openai_config(model, base_url, cfg)
        check_reachable(oc.base_url, min(2.0, float(oc.connect_timeout)))
    options = cfg.generation if max_new_tokens is None else replace(cfg.generation, max_new_tokens=max_new_tokens)
    from focuskit.models.encoders.backend import use_encoder_backend

    # An endpoint answers: this process only detects, so the encoder may run on ONNX (see `detect`). In-process
    # transformers import torch anyway: keep the reference encoder there.
    with use_encoder_backend("auto" if backend == "openai" else "torch"):
        mem, detector = _open(memory, cfg)
        with mem:
            vlm = make_backend(backend, model, base_url, cfg)
            if video is not None:
                from focuskit.personalize.video import ask_video

                va = ask_video(
                    video, question, mem, vlm, detector=detector, sampling=_sampling(cfg, every_n, fps), output=draw,
                    template=cfg.prompt, options=options,
                )  # fmt: skip
                if verbose:
                    typer.echo(f"prompt sent to the VLM:\n{va.prompt}", err=True)
                if as_json:
                    typer.echo(json.dumps({"answer": va.text, "prompt": va.prompt,
                                           "frames": [f.to_json() for f in va.result.frames]}))  # fmt: skip
                else:
                    typer.echo(va.text)
                return
            _ask_images(paths, question, mem, vlm, detector, cfg, options, draw, draw_dir, out, as_json, verbose)


def _ask_images(
    paths: list[Path], question: str, mem: ConceptMemory, vlm: VLMBackend, detector: Any, cfg: PeKitConfig,
    options: Any, draw: Path | None, draw_dir: Path | None, out: Path | None, as_json: bool, verbose: bool,
) -> None:  # fmt: skip
    from focuskit.core.image import load_image, save_image
    from focuskit.exports import jsonl_record, write_detections
    from focuskit.personalize.answer import ask as ask_image

    order = mem.names()
    results: list[ImageResult] = []
    taken: set[str] = set()
    prompted_dir: Path | None = None
    for path in _bar(paths, "ask", quiet=False):
        image = load_image(path)
        ans = ask_image(image, question, mem, vlm, detector=detector, template=cfg.prompt, options=options)
        result = image_result(path, image, ans.detections, {"answer": ans.text, "prompt": ans.prompt})
        results.append(result)
        target = draw if draw is not None else (draw_dir / draw_name(path, taken) if draw_dir else None)
        if target is None and verbose:  # --verbose shows the prompted image: keep it somewhere the user can open
            if prompted_dir is None:
                import tempfile

                prompted_dir = Path(tempfile.mkdtemp(prefix="focuskit-prompted-"))
            target = prompted_dir / draw_name(path, taken)
        if target is not None:
            save_image(ans.annotated_image, target, what="drawing")
        if verbose:
            typer.echo(f"--- {path}\nprompt sent to the VLM:\n{ans.prompt}\nprompted image: {target}", err=True)
            for line in describe(ans.detections, cfg.detector.tau):
                typer.echo(f"detections: {line}", err=True)
        if as_json:
            typer.echo(json.dumps(jsonl_record(result, order)))
        else:
            typer.echo(f"{path}: {ans.text}" if len(paths) > 1 else ans.text)
        if draw is not None and not as_json and not verbose:
            typer.echo(f"drawn: {draw}", err=True)
    if out is not None:
        write_detections(results, out, concepts=order)
        typer.echo(f"results: {out} ({len(results)} image(s))", err=True)


def serve_vlm(
    model: Annotated[str, typer.Option(help="Checkpoint directory, hub id, or 'tiny' (offline random-weight model)")],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port")] = 8000,
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
    app.command("serve-vlm")(serve_vlm)
