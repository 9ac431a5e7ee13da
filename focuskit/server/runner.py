"""Run the app under hypercorn, with the connection deadlines uvicorn cannot set.

Why hypercorn and not uvicorn: uvicorn 0.54 arms its only connection timer (`timeout_keep_alive`) after a response
has been sent (`h11_impl.py`: `connection_made` sets no timer; `on_response_complete` does), so a client that opens a
connection and sends its headers one line every few seconds is held open forever. Hypercorn starts its idle timer
(`keep_alive_timeout`) when the connection opens and stops it only once a complete request line and headers have
arrived (`asyncio/tcp_server.py` `run` / `protocol/h11.py` `Updated(idle=False)`), so that one setting is a total
deadline for the headers, and also the keep-alive limit between requests; header size is capped by
`h11_max_incomplete_size` (16 KiB). Hypercorn is maintained by the Pallets-adjacent author of Quart and passes the
same ASGI/lifespan contract. The body's pace and total time are enforced inside the app (`guards.BodyDeadline`), not
with hypercorn's `read_timeout`, which would also cut a client that is quietly waiting for a slow model answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from focuskit.core.errors import ConfigError


def hypercorn_config(host: str, port: int, *, header_timeout_s: float) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.keep_alive_timeout = header_timeout_s
    config.accesslog = None
    config.errorlog = None  # our own logger reports errors; hypercorn's startup banner stays quiet
    config.graceful_timeout = 2.0
    return config


def bind_sockets(config: Any, host: str, port: int) -> Any:
    """Open the listening sockets now, so a busy port is one clear error (exit 2) before anything else runs."""
    try:
        return config.create_sockets()
    except OSError as exc:
        reason = "is already in use" if exc.errno in (48, 98, 10048) else f"cannot be opened ({exc.strerror or exc})"
        raise ConfigError(
            f"port {port} on {host} {reason}: pick another with --port, or stop the other server"
        ) from None


def serve_app(
    app: Any,
    config: Any,
    sockets: Any,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Serve `app` on already-bound `sockets` until Ctrl-C / SIGTERM (or until `shutdown_trigger` returns)."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    async def main() -> None:
        await worker_serve(
            wrap_app(app, config.wsgi_max_body_size, "asgi"), config, sockets=sockets, shutdown_trigger=shutdown_trigger
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
