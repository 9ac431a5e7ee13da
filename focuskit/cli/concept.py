"""`focuskit concept add|list|show|rename|remove|context|reembed`: manage a concept memory directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from focuskit.cli.tables import print_table
from focuskit.core.errors import ConfigError, FocusError

if TYPE_CHECKING:
    from focuskit.core.box import Box
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.config import PeKitConfig

concept_app = typer.Typer(help="Teach focuskit your concepts: add them from a few photos, list, rename, remove.")

MemoryOpt = Annotated[Path, typer.Option("--memory", "-m", help="Concept memory directory (created on first add)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="PeKit config YAML (configs/pekit.yaml)")]
EncoderOpt = Annotated[
    str | None, typer.Option(help="Encoder name for a NEW memory (default: mobilenetv2 s16 + 3x3 parts)")
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


def _per_image(values: list[str], images: list[Path], option: str, hint: str) -> list[str] | None:
    if not values:
        return None
    if len(values) != len(images):
        raise ConfigError(
            f"got {len(images)} images and {len(values)} {option}: give one {option} per image, in order ({hint})"
        )
    return values


def _boxes(images: list[Path], box: list[str]) -> list[Box | None] | None:
    from focuskit.core.box import parse_box_arg

    given = _per_image(box, images, "--box", "--box auto to find the object in that image")
    return None if given is None else [None if b.strip().lower() == "auto" else parse_box_arg(b) for b in given]


def _masks(images: list[Path], mask: list[str]) -> list[Path | None] | None:
    given = _per_image(mask, images, "--mask", "--mask none for a view without one")
    if given is None:
        return None
    out: list[Path | None] = []
    for m in given:
        if m.strip().lower() in ("none", "-", ""):
            out.append(None)
            continue
        path = Path(m).expanduser()
        if not path.is_file():
            raise ConfigError(f"--mask {path} not found (a PNG, white = object, the size of its image)")
        out.append(path)
    return out


@concept_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The concept's name, e.g. Bruno")],
    images: Annotated[list[str], typer.Argument(help="Reference photos of it: files, folders or glob patterns")],
    memory: MemoryOpt,
    box: Annotated[
        list[str], typer.Option(help="x1,y1,x2,y2 in pixels, one per image in order; 'auto' to find it")
    ] = [],  # noqa: B006
    mask: Annotated[
        list[str], typer.Option(help="Mask PNG (white = object) per image in order; 'none' for a view without")
    ] = [],  # noqa: B006
    segment: Annotated[
        bool, typer.Option("--segment", help="Store a mask with each view, made from its box by the segmenter")
    ] = False,
    segmenter: Annotated[str, typer.Option(help="Segmenter for --segment (grabcut needs no weights)")] = "grabcut",
    context: Annotated[str, typer.Option(help="What to tell the VLM about it, e.g. 'my golden retriever'")] = "",
    replace: Annotated[bool, typer.Option(help="Replace an existing concept of that name")] = False,
    show: Annotated[Path | None, typer.Option(help="Write each view with the box used drawn into this folder")] = None,
    encoder: EncoderOpt = None,
    encoder_opt: EncoderOptionOpt = [],  # noqa: B006
    config: ConfigOpt = None,
) -> None:
    """Add a concept from a few photos. Views without a box are boxed automatically; check them with --show."""
    from focuskit.cli.inputs import expand_inputs
    from focuskit.core.io import check_output_dir
    from focuskit.core.names import check_concept_name

    name = check_concept_name(name)
    paths = expand_inputs(images, what="reference image", videos=False, dedupe=False)
    boxes = _boxes(paths, box)
    masks = _masks(paths, mask)
    if show is not None:
        check_output_dir(show, option="--show")
    mem, _ = open_memory_for(memory, config, encoder, encoder_opt, create=True)
    with mem:
        if name in mem and not replace:
            raise FocusError(f"concept {name!r} already exists in {memory}: pass --replace to replace it")
        seg = None
        if segment:
            from focuskit.models.segmenters import create_segmenter

            seg = create_segmenter(segmenter)
        report = mem.add(name, paths, boxes=boxes, masks=masks, context=context, replace=replace, progress=True,
                         segmenter=seg)  # fmt: skip
        color = mem.color(report.name)
        hygiene = mem.view_consistency(report.name)
    from focuskit.viz.draw import COLOR_NAMES

    for v in report.views:
        if v.how == "skipped" or v.box is None:
            typer.echo(f"view {v.index + 1} ({v.source}): skipped, {v.reason}")
            continue
        coords = ",".join(f"{c:.0f}" for c in v.box.to_xyxy())
        how = (
            "given box" if v.how == "box" else "from mask" if v.how == "mask" else f"auto-picked (score {v.score:.2f})"
        )
        typer.echo(f"view {v.index + 1} ({v.source}): box {coords}, {how}{', with mask' if v.masked else ''}")
    verb = "replaced" if report.replaced else "added"
    color_name = COLOR_NAMES[color % len(COLOR_NAMES)]
    typer.echo(f"{verb} {report.name!r}: {len(report.used)} view(s), {report.vectors} vectors, color {color_name}")
    for h in hygiene:
        if h.outlier:
            typer.echo(
                f"warning: view {h.position + 1} ({h.source}) looks unlike the others ({h.reason}); check it with "
                f"`focuskit concept show {report.name!r} -m {memory}`, drop it with `focuskit concept prune`",
                err=True,
            )
    if show is not None:
        _draw_views(report, paths, show, color)


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
    from rich.table import Table

    table = Table(title=f"{memory} ({len(infos)} concepts, encoder {encoder or '-'})")
    for col in ("name", "views", "vectors", "color", "context"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, str(i.views), str(i.vectors), COLOR_NAMES[i.color % len(COLOR_NAMES)], i.context)
    print_table(table)


@concept_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Concept name")],
    memory: MemoryOpt,
    out: Annotated[Path | None, typer.Option(help="Also write the stored views (box, mask) as PNGs here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: the views and their consistency")] = False,
) -> None:
    """A concept's stored views: source, how each was boxed, its consistency with the other views, outliers."""

    from focuskit.cli.tables import print_table
    from focuskit.core.io import check_output_dir
    from focuskit.memory.store import open_memory

    if out is not None:
        check_output_dir(out, option="--out")
    with open_memory(memory) as mem:
        views = mem.views(name) if out is not None else []
        hygiene = mem.view_consistency(name)
        color = mem.color(name)
        info = mem.get(name)
    if as_json:
        typer.echo(json.dumps({"name": info.name, "context": info.context, "views": [h.to_json() for h in hygiene]}))
    else:
        from rich.table import Table

        table = Table(title=f"{info.name}: {len(hygiene)} view(s)")
        for col in ("#", "view id", "source", "how", "consistency", "outlier"):
            table.add_column(col, justify="right" if col in ("#", "view id", "consistency") else "left")
        for h in hygiene:
            score = "-" if h.score is None else f"{h.score:.3f}"
            table.add_row(str(h.position + 1), str(h.view_id), h.source, h.how, score, h.reason if h.outlier else "")
        print_table(table)
        outliers = [h for h in hygiene if h.outlier]
        if outliers:
            ids = " ".join(f"--view {h.view_id}" for h in outliers)
            typer.echo(f"{len(outliers)} outlier view(s): drop with `focuskit concept prune {info.name!r} -m {memory} "
                       f"--outliers` (or {ids})")  # fmt: skip
    if out is not None:
        _write_views(views, out, color, quiet=as_json)


def _write_views(views: list[Any], out: Path, color: int, *, quiet: bool) -> None:
    from focuskit.core.image import save_image
    from focuskit.personalize.prompting import overlay_masks
    from focuskit.viz.draw import PALETTE, draw_boxes

    rgb = PALETTE[color % len(PALETTE)]
    out.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(views):
        path = out / f"{i + 1:02d}.png"
        image = v.image if v.mask is None else overlay_masks(v.image, v.mask[None], [rgb])
        save_image(draw_boxes(image, [v.box], [v.how], [rgb]), path, what="view drawing")
        if not quiet:
            typer.echo(f"{path}  ({v.source}, {v.how})")


@concept_app.command("prune")
def prune_cmd(
    name: Annotated[str, typer.Argument(help="Concept name")],
    memory: MemoryOpt,
    outliers: Annotated[bool, typer.Option("--outliers", help="Drop the views `concept show` flags")] = False,
    view: Annotated[list[int], typer.Option("--view", help="Drop this view id (see `concept show`; repeat)")] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be dropped")] = False,
) -> None:
    """Drop a concept's bad reference views: the outliers, or views by id."""
    if not outliers and not view:
        raise ConfigError("say what to drop: --outliers, or --view ID (ids from `focuskit concept show NAME`)")
    from focuskit.memory.curation import views_to_drop
    from focuskit.memory.store import open_memory

    with open_memory(memory) as mem:
        current = mem.view_consistency(name)
        drop = views_to_drop(name, current, view, outliers)
        if not dry_run and drop:
            mem.prune(name, view_ids=sorted(drop))
    if not drop:
        typer.echo(f"nothing to drop: no view of {name!r} is an outlier")
        return
    verb = "would drop" if dry_run else "dropped"
    listed = ", ".join(f"{c.view_id} ({c.source})" for c in current if c.view_id in drop)
    typer.echo(f"{verb} {len(drop)} view(s) of {name!r}: {listed}; {len(current) - len(drop)} left")


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
