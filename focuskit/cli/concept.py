"""`focuskit concept add|list|show|rename|remove|context|reembed`: manage a concept memory directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from focuskit.core.box import Box, parse_box_arg
from focuskit.core.errors import ConfigError, FocusError

if TYPE_CHECKING:
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.config import PeKitConfig

concept_app = typer.Typer(help="Teach focuskit your concepts: add them from a few photos, list, rename, remove.")

MemoryOpt = Annotated[Path, typer.Option("--memory", "-m", help="Concept memory directory (created on first add)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")]
EncoderOpt = Annotated[
    str | None, typer.Option(help="Encoder name for a NEW memory (default from the config: mobilenetv2 s16+s32)")
]
EncoderOptionOpt = Annotated[
    list[str], typer.Option("--encoder-opt", help="Encoder option key=value, e.g. layer=s16 (repeat)")
]


def parse_options(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> dict, values parsed as YAML scalars (numbers, booleans)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"options must be key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def open_memory_for(
    memory: Path, config: Path | None, encoder: str | None, encoder_opts: list[str], *, create: bool
) -> tuple[ConceptMemory, PeKitConfig]:
    """A `ConceptMemory` wired with the config's proposer and memory settings and the right encoder."""
    from focuskit.memory.store import ConceptMemory, EncoderSpec
    from focuskit.personalize.config import load_pekit_config

    cfg = load_pekit_config(config)
    spec: EncoderSpec | None = None
    if encoder is not None:
        spec = EncoderSpec(encoder, parse_options(encoder_opts))
    elif encoder_opts:
        raise ConfigError("--encoder-opt needs --encoder")
    mem = ConceptMemory(memory, encoder=spec, proposer=cfg.proposer, config=cfg.memory, create=create)
    if spec is None and mem.encoder_name is None:  # a new memory: the config's encoder
        mem.close()
        mem = ConceptMemory(memory, encoder=cfg.encoder, proposer=cfg.proposer, config=cfg.memory, create=create)
    return mem, cfg


def _boxes(images: list[Path], box: list[str]) -> list[Box | None] | None:
    if not box:
        return None
    if len(box) != len(images):
        raise ConfigError(
            f"got {len(images)} images and {len(box)} --box: give one --box per image, in order "
            "(--box auto to find the object in that image)"
        )
    return [None if b.strip().lower() == "auto" else parse_box_arg(b) for b in box]


@concept_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The concept's name, e.g. Bruno")],
    images: Annotated[list[Path], typer.Argument(help="Reference photos of it")],
    memory: MemoryOpt,
    box: Annotated[
        list[str], typer.Option(help="x1,y1,x2,y2 in pixels, one per image in order; 'auto' to find it")
    ] = [],  # noqa: B006
    context: Annotated[str, typer.Option(help="What to tell the VLM about it, e.g. 'my golden retriever'")] = "",
    replace: Annotated[bool, typer.Option(help="Replace an existing concept of that name")] = False,
    show: Annotated[Path | None, typer.Option(help="Write each view with the box used drawn into this folder")] = None,
    encoder: EncoderOpt = None,
    encoder_opt: EncoderOptionOpt = [],  # noqa: B006
    config: ConfigOpt = None,
) -> None:
    """Add a concept from a few photos. Views without a box are boxed automatically; check them with --show."""
    from focuskit.core.io import check_output_dir
    from focuskit.core.names import check_concept_name

    name = check_concept_name(name)
    boxes = _boxes(images, box)
    if show is not None:
        check_output_dir(show, option="--show")
    mem, _ = open_memory_for(memory, config, encoder, encoder_opt, create=True)
    with mem:
        report = mem.add(name, images, boxes=boxes, context=context, replace=replace, progress=True)
        color = mem.color(report.name)
    from focuskit.viz.draw import COLOR_NAMES

    for v in report.views:
        if v.how == "skipped" or v.box is None:
            typer.echo(f"view {v.index + 1} ({v.source}): skipped, {v.reason}")
            continue
        coords = ",".join(f"{c:.0f}" for c in v.box.to_xyxy())
        how = (
            "given box" if v.how == "box" else "from mask" if v.how == "mask" else f"auto-picked (score {v.score:.2f})"
        )
        typer.echo(f"view {v.index + 1} ({v.source}): box {coords}, {how}")
    verb = "replaced" if report.replaced else "added"
    color_name = COLOR_NAMES[color % len(COLOR_NAMES)]
    typer.echo(f"{verb} {report.name!r}: {len(report.used)} view(s), {report.vectors} vectors, color {color_name}")
    if show is not None:
        _draw_views(report, images, show, color)


def _draw_views(report: Any, images: list[Path], show: Path, color: int) -> None:
    """Write each used view with its box into `show`; a failure here says the concept itself was saved."""
    from focuskit.core.image import load_image, save_image
    from focuskit.viz.draw import PALETTE, draw_boxes

    try:
        show.mkdir(parents=True, exist_ok=True)
        for v in report.used:
            img = load_image(images[v.index])
            label = "auto" if v.how == "auto" else v.how
            if v.box is None:
                continue
            out = draw_boxes(img, [v.box], [f"{report.name} ({label})"], [PALETTE[color % len(PALETTE)]])
            path = show / f"{Path(v.source).stem}_view{v.index + 1}.png"
            save_image(out, path, what="view drawing")
            typer.echo(f"drawn: {path}")
    except (OSError, FocusError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FocusError(f"concept {report.name!r} was saved, but --show {show} failed: {reason}") from None


@concept_app.command("list")
def list_cmd(
    memory: MemoryOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the concepts in a memory."""
    from focuskit.memory.store import open_memory
    from focuskit.viz.draw import COLOR_NAMES

    with open_memory(memory) as mem:
        infos = mem.list()
        encoder = mem.encoder_name
    if as_json:
        rows = [
            {"name": i.name, "context": i.context, "views": i.views, "vectors": i.vectors,
             "color": COLOR_NAMES[i.color % len(COLOR_NAMES)]}
            for i in infos
        ]  # fmt: skip
        typer.echo(json.dumps({"encoder": encoder, "concepts": rows}))
        return
    table = Table(title=f"{memory} ({len(infos)} concepts, encoder {encoder or '-'})")
    for col in ("name", "views", "vectors", "color", "context"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, str(i.views), str(i.vectors), COLOR_NAMES[i.color % len(COLOR_NAMES)], i.context)
    Console().print(table)


@concept_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Concept name")],
    memory: MemoryOpt,
    out: Annotated[Path, typer.Option(help="Folder to write the stored views (with boxes) into")],
) -> None:
    """Write a concept's stored views, with the box of each, as PNGs."""
    from focuskit.core.image import save_image
    from focuskit.core.io import check_output_dir
    from focuskit.memory.store import open_memory
    from focuskit.viz.draw import PALETTE, draw_boxes

    check_output_dir(out, option="--out")
    with open_memory(memory) as mem:
        views = mem.views(name)
        color = PALETTE[mem.color(name) % len(PALETTE)]
    out.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(views):
        path = out / f"{i + 1:02d}.png"
        save_image(draw_boxes(v.image, [v.box], [v.how], [color]), path, what="view drawing")
        typer.echo(f"{path}  ({v.source}, {v.how})")


@concept_app.command("rename")
def rename(
    old: Annotated[str, typer.Argument(help="Current name")],
    new: Annotated[str, typer.Argument(help="New name")],
    memory: MemoryOpt,
) -> None:
    """Rename a concept (its views, embeddings and color stay)."""
    from focuskit.core.names import check_concept_name
    from focuskit.memory.store import open_memory

    new = check_concept_name(new)
    with open_memory(memory) as mem:
        mem.rename(old, new)
    typer.echo(f"renamed {old!r} to {new!r}")


@concept_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Concept name")],
    memory: MemoryOpt,
) -> None:
    """Remove a concept and its views."""
    from focuskit.memory.store import open_memory

    with open_memory(memory) as mem:
        mem.remove(name)
    typer.echo(f"removed {name!r}")


@concept_app.command("context")
def set_context(
    name: Annotated[str, typer.Argument(help="Concept name")],
    text: Annotated[str, typer.Argument(help="New context text ('' to clear)")],
    memory: MemoryOpt,
) -> None:
    """Change what the VLM is told about a concept."""
    from focuskit.memory.store import open_memory

    with open_memory(memory) as mem:
        mem.set_context(name, text)
    typer.echo(f"context of {name!r} updated")


@concept_app.command("reembed")
def reembed(
    memory: MemoryOpt,
    encoder: Annotated[str, typer.Option(help="Encoder to re-embed every view with")],
    encoder_opt: EncoderOptionOpt = [],  # noqa: B006
) -> None:
    """Recompute all embeddings with another encoder (from the stored views); the memory then uses that encoder."""
    from focuskit.memory.store import EncoderSpec, open_memory

    with open_memory(memory) as mem:
        n = mem.re_embed(EncoderSpec(encoder, parse_options(encoder_opt)))
        tag = mem.encoder_name
    typer.echo(f"re-embedded {n} vectors with {tag}")


def register(app: typer.Typer) -> None:
    app.add_typer(concept_app, name="concept")
