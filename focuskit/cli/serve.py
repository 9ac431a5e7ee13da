"""`focuskit serve`: the HTTP API and web page over a concept memory and a photo library.

With neither --memory nor --library it serves the built-in demo library (real photos that install with focuskit,
copied into the user's cache directory) with a seeded demo concept, so one command shows the whole thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from focuskit.server.settings import ServerSettings


def serve(
    memory: Annotated[Path | None, typer.Option("--memory", "-m", help="Concept memory directory")] = None,
    library: Annotated[Path | None, typer.Option("--library", "-l", help="Photo folder to index and search")] = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Library index directory (default MEMORY/library)")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    token: Annotated[
        str | None, typer.Option(help="Bearer token required on API requests (default: $FOCUSKIT_TOKEN)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="ServerSettings YAML (limits, library, backend)")
    ] = None,
    backend: Annotated[Literal["none", "hf", "openai"] | None, typer.Option(help="VLM backend for /ask")] = None,
    model: Annotated[
        str | None, typer.Option(help="Backend model: local checkpoint (hf) or served name (openai)")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1")
    ] = None,
    no_index: Annotated[bool, typer.Option("--no-index", help="Do not update the library index at start")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Another name this server answers to in the Host header (repeatable)"),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option("--allow-origin", help="Another origin (scheme://host:port) allowed to write (repeatable)"),
    ] = None,
) -> None:
    """Start the web page and HTTP API (prints the URL); Ctrl-C stops it."""
    import dataclasses

    from focuskit.cli.library import set_threads

    set_threads(threads)

    from focuskit.core.config import load_config
    from focuskit.core.errors import ConfigError
    from focuskit.server.settings import BackendSettings, ServerSettings, token_from_env

    settings = load_config(ServerSettings, config)
    demo = memory is None and library is None and config is None
    if library is not None and memory is None:
        raise ConfigError("--library needs --memory DIR too: where concepts and the library index are kept")
    if demo:
        from focuskit.core.cache import cache_dir
        from focuskit.library.demo import build_demo_library

        typer.echo("focuskit: no --memory/--library given: serving the built-in demo library")
        library = build_demo_library()
        memory = cache_dir() / "demo" / "memory"
    backend_cfg = settings.backend
    if backend is not None or model is not None or base_url is not None:
        backend_cfg = BackendSettings(
            kind=backend or backend_cfg.kind,
            model=model if model is not None else backend_cfg.model,
            base_url=base_url if base_url is not None else backend_cfg.base_url,
            api_key_env=backend_cfg.api_key_env,
            timeout_s=backend_cfg.timeout_s,
        )
    settings = dataclasses.replace(
        settings,
        memory_dir=memory if memory is not None else settings.memory_dir,
        library_dir=library if library is not None else settings.library_dir,
        state_dir=state if state is not None else settings.state_dir,
        host=host,
        port=port,
        token=token_from_env(token) or settings.token,
        index_on_start=settings.index_on_start and not no_index,
        allow_hosts=[*settings.allow_hosts, *(allow_host or [])],
        allow_origins=[*settings.allow_origins, *(allow_origin or [])],
        backend=backend_cfg,
    )
    run_server(settings, seed_demo=demo)


def run_server(settings: ServerSettings, *, seed_demo: bool = False) -> None:
    """Bind the port, build the app, print where it listens, and serve (hypercorn) until interrupted."""
    from focuskit.server.runner import bind_sockets, hypercorn_config, serve_app

    config = hypercorn_config(settings.host, settings.port, header_timeout_s=settings.header_timeout_s)
    sockets = bind_sockets(config, settings.host, settings.port)  # a busy port fails before the models load

    from focuskit.server.app import create_app

    app = create_app(settings)
    state = app.state.focuskit
    if seed_demo:
        from focuskit.library.demo import seed_demo_memory

        if seed_demo_memory(state.memory):
            typer.echo("focuskit: taught the demo concept 'my box' from one photo; search it under 'Search library'")
    s = state.settings
    typer.echo(f"focuskit: memory {s.memory_dir.resolve()}")
    if s.library_dir is not None:
        typer.echo(f"focuskit: library {s.library_dir.resolve()} (index in {s.resolved_state_dir.resolve()})")
    if s.token:
        typer.echo("focuskit: API requests need 'Authorization: Bearer <token>' (the page asks for it)")
    typer.echo(f"focuskit: serving on {s.url}", color=False)
    serve_app(app, config, sockets)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
