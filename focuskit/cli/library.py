"""`focuskit library index|search|status`: index a photo folder once, then find concepts in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from focuskit.cli.tables import print_table

library_app = typer.Typer(
    help="Personal visual search: index a photo folder once, then list the photos where a concept appears.",
    no_args_is_help=True,
)

MemoryOpt = Annotated[Path, typer.Option("--memory", "-m", help="Concept memory directory")]
StateOpt = Annotated[Path | None, typer.Option("--state", help="Library index directory (default: MEMORY/library)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="LibraryConfig YAML (encoder, proposers, tau ...)")]


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads for this process (a command-line choice, so process-wide is right here).

    On a machine shared with other CPU-heavy processes, 1 thread can be many times faster than the default."""
    if threads is None:
        return
    from focuskit.core.errors import ConfigError

    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _open(memory: Path, state: Path | None, config: Path | None, *, create_memory: bool) -> tuple[Any, Any]:
    """The memory, then the index sharing the memory's encoder (so both embed the same way)."""
    from focuskit.core.config import load_config
    from focuskit.library.index import LibraryConfig, LibraryIndex
    from focuskit.memory.store import ConceptMemory

    cfg = load_config(LibraryConfig, config)
    mem = ConceptMemory(memory, create=create_memory)
    index = LibraryIndex(state if state is not None else memory / "library", cfg, encoder=lambda: mem.encoder)
    return mem, index


@library_app.command("index")
def index_cmd(
    folder: Annotated[Path, typer.Argument(help="Photo folder (searched recursively; videos are sampled)")],
    memory: MemoryOpt,
    state: StateOpt = None,
    config: ConfigOpt = None,
    reindex: Annotated[bool, typer.Option(help="Recompute every file (after changing the encoder)")] = False,
    check: Annotated[
        Literal["stat", "hash"] | None, typer.Option(help="Change detection: size+mtime, or also content hash")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
) -> None:
    """Compute proposals and embeddings for new or changed files in FOLDER; drop deleted ones. Resumable."""
    set_threads(threads)
    mem, index = _open(memory, state, config, create_memory=True)
    if check is not None:
        index.config.check = check
    report = index.update(folder, reindex=reindex, progress=not as_json, exclude=[memory])
    mem.close()
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    typer.echo(
        f"indexed {folder}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.unchanged} unchanged, {len(report.failed)} failed ({report.items} images, {report.seconds:.1f} s)"
    )
    for path, error in report.failed[:20]:
        typer.echo(f"  failed: {path}: {error}")
    if len(report.failed) > 20:
        typer.echo(f"  ... and {len(report.failed) - 20} more")


@library_app.command("search")
def search_cmd(
    concept: Annotated[str, typer.Argument(help="Concept name in the memory")],
    memory: MemoryOpt,
    state: StateOpt = None,
    config: ConfigOpt = None,
    tau: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Score threshold, a cosine in [-1, 1] (default: config)")
    ] = None,
    top: Annotated[int | None, typer.Option(help="Show at most N photos")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: a list of hits")] = False,
) -> None:
    """List the indexed photos where CONCEPT appears, best first, with boxes and scores (no recomputation)."""
    from focuskit.core.errors import MemoryStoreError

    if not (state or memory / "library").exists():
        raise MemoryStoreError(
            f"no library index at {state or memory / 'library'}: run `focuskit library index DIR "
            f"--memory {memory}` first"
        )
    mem, index = _open(memory, state, config, create_memory=False)
    hits = index.search(concept, mem, tau=tau, top=top)
    mem.close()
    if as_json:
        typer.echo(json.dumps([h.to_json() for h in hits]))
        return
    if not hits:
        typer.echo(f"{concept!r} not found in the library (threshold {index.config.tau if tau is None else tau})")
        return
    from rich.table import Table

    table = Table(title=f"{concept}: {len(hits)} photo(s)")
    for col in ("#", "score", "image", "box x1,y1,x2,y2"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for rank, h in enumerate(hits, 1):
        where = str(h.image) if h.frame is None else f"{h.image} @ frame {h.frame} ({h.time_s:.1f} s)"
        table.add_row(str(rank), f"{h.score:.3f}", where, ",".join(f"{v:.0f}" for v in h.boxes[0].to_xyxy()))
    print_table(table)


@library_app.command("embed")
def embed_cmd(
    folder: Annotated[Path, typer.Argument(help="Photo folder (searched recursively; videos are sampled)")],
    out: Annotated[Path, typer.Option("--out", help="Batch file to write (.npz)")],
    part: Annotated[str, typer.Option(help="This share of the files, I/N (0-based): every N-th file")] = "0/1",
    config: ConfigOpt = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
) -> None:
    """Embed a share of FOLDER into a batch file, touching no index: what one cluster task or local process runs.
    Commit the batch files with `focuskit library ingest`. The encoder is the config's (default: the memory's)."""
    from focuskit.core.config import load_config
    from focuskit.core.errors import ConfigError
    from focuskit.core.io import check_output_file
    from focuskit.library.config import LibraryConfig
    from focuskit.library.embedding import embed_files, encoder_tag, tasks_for_part, write_batch_file

    check_output_file(out, option="--out")
    try:
        i, n = (int(v) for v in part.split("/"))
    except ValueError:
        raise ConfigError(f"--part must be I/N, e.g. 0/2, got {part!r}") from None
    cfg = load_config(LibraryConfig, config)
    tasks = tasks_for_part(folder, i, n, hash_files=cfg.check == "hash")
    set_threads(threads)
    records = embed_files(tasks, cfg)
    write_batch_file(out, records, encoder_tag(cfg))
    typer.echo(f"embedded {len(records)} file(s) of {folder} (part {i}/{n}) into {out}")


@library_app.command("ingest")
def ingest_cmd(
    batches: Annotated[list[Path], typer.Argument(help="Batch files written by `focuskit library embed`")],
    memory: MemoryOpt,
    state: StateOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Commit batch files into the library index (and its vector index), as `library index` would have."""
    from focuskit.core.errors import DatasetError

    missing = [str(b) for b in batches if not b.is_file()]
    if missing:
        raise DatasetError(f"batch file(s) not found: {', '.join(missing)}")
    mem, index = _open(memory, state, config, create_memory=True)
    mem.close()
    report = index.ingest(batches)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    typer.echo(f"ingested {len(batches)} batch file(s): {report.added} file(s), {report.items} image(s)")


@library_app.command("status")
def status_cmd(memory: MemoryOpt, state: StateOpt = None) -> None:
    """What the library index holds: folders, files, images, encoder."""
    from focuskit.core.errors import MemoryStoreError
    from focuskit.library.store import DB_NAME, LibraryStore

    where = state if state is not None else memory / "library"
    if not (where / DB_NAME).is_file():
        raise MemoryStoreError(f"no library index at {where}: run `focuskit library index DIR --memory {memory}` first")
    store = LibraryStore(where)
    counts = store.counts()
    typer.echo(f"index {store.state_dir}: encoder {store.get_meta('encoder')}")
    typer.echo(
        f"  {counts['files']} files ({counts['failed']} failed), {counts['items']} images, "
        f"{counts['proposals']} proposals"
    )
    for root in store.roots():
        typer.echo(f"  folder: {root}")


def register(app: typer.Typer) -> None:
    app.add_typer(library_app, name="library")
