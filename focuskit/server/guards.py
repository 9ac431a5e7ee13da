"""ASGI guards that run before routing and before authentication: Host allow-list, same-origin writes, body deadlines.

* **Host** (`HostOriginGuard`): every request's `Host` must be a name this server answers to (its bind address,
  `localhost`, `127.0.0.1`, `[::1]`, the address the connection arrived on, or an `--allow-host` name); anything else
  gets 421. A DNS-rebinding page (`evil.example` resolving to 127.0.0.1) sends `Host: evil.example`, so it can read
  nothing.
* **Origin** (same class): a state-changing request (POST, PUT, PATCH, DELETE) must come from the server's own
  origin or an `--allow-origin` one, judged from `Origin`, else from `Referer`; a request carrying neither (a script,
  curl, an old browser) must carry `X-Focuskit: 1`, a header no cross-site form can send. Refusals are 403.
* **Body deadlines** (`BodyDeadline`): a request body must keep arriving (at most `idle_s` of silence between chunks)
  and be complete within `total_s`, else 408 and the connection closes. The deadline for the request line and
  headers is the HTTP server's (hypercorn's `keep_alive_timeout`, which runs from the moment a connection opens until
  its headers are complete: see `focuskit.server.runner`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CUSTOM_HEADER = "x-focuskit"
"""The header the page (and any script without an Origin) sends on writes: `X-Focuskit: 1`."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


async def send_json_error(send: Send, status: int, code: str, message: str, *, close: bool = True) -> None:
    """A complete JSON error response `{"error": code, "message": message}` straight on the ASGI channel."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_name(value: str) -> str:
    """The name part of a Host header value, lowercased: '127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '[::1]'."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def normalize_host(name: str) -> str:
    """'::1' -> '[::1]' (how it appears in a Host header); other names lowercased."""
    name = name.strip().lower()
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    except ValueError:
        pass
    return name


def normalize_origin(origin: str) -> str:
    """'HTTP://Example.org:8000/' -> 'http://example.org:8000' (scheme://host[:port], no path)."""
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.netloc:
        return origin.strip().lower().rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class HostOriginGuard:
    """Refuse requests for foreign Host names (421) and state-changing requests from foreign origins (403)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bind_host: str,
        allow_hosts: Iterable[str] = (),
        allow_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        names = [*LOOPBACK_NAMES, *allow_hosts]
        if bind_host not in ("0.0.0.0", "::", ""):
            names.append(bind_host)
        self.hosts = frozenset(normalize_host(n) for n in names)
        self.origins = frozenset(normalize_origin(o) for o in allow_origins)

    def _host_allowed(self, name: str, scope: Scope) -> bool:
        if name in self.hosts:
            return True
        # An IP literal equal to the address this connection arrived on is the user typing that address; a
        # rebinding page always sends its own host *name*, never an IP literal.
        server = scope.get("server")
        return bool(server) and _is_ip_literal(name) and normalize_host(str(server[0])) == name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = host_name(host)
        if not name or not self._host_allowed(name, scope):
            shown = ", ".join(sorted(self.hosts))
            await send_json_error(
                send,
                421,
                "unknown_host",
                f"this server answers to {shown}, not Host {host!r}; start it with --allow-host {name or 'NAME'} "
                "if that name is yours",
            )
            return
        if scope["type"] == "http" and scope.get("method", "GET").upper() in WRITE_METHODS:
            refusal = self._write_refusal(headers, host)
            if refusal is not None:
                await send_json_error(send, 403, *refusal)
                return
        await self.app(scope, receive, send)

    def _write_refusal(self, headers: dict[str, str], host: str) -> tuple[str, str] | None:
        own = {f"http://{host.strip().lower()}", f"https://{host.strip().lower()}"}
        origin = headers.get("origin")
        source = "Origin"
        if origin is None and headers.get("referer"):
            origin, source = normalize_origin(headers["referer"]), "Referer"
        if origin is None:
            if headers.get(CUSTOM_HEADER, "").strip() == "1":
                return None
            return (
                "missing_header",
                "a write without an Origin header must carry the header 'X-Focuskit: 1' "
                "(it shows the request is not a cross-site form)",
            )
        given = normalize_origin(origin)
        if given in own or given in self.origins:
            return None
        return (
            "cross_origin",
            f"cross-origin write refused: {source} {origin!r} is not this server's origin; start the server with "
            f"--allow-origin {given} if that page is yours",
        )


class BodyDeadline:
    """ASGI middleware: a request body must not pause more than `idle_s` between chunks nor take over `total_s`
    in all; otherwise 408 (or a dropped connection when the app already answered) and the body is not read further."""

    def __init__(self, app: ASGIApp, *, idle_s: float, total_s: float) -> None:
        self.app = app
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.total_s
        finished = False
        timed_out: str | None = None
        started = False

        async def timed_receive() -> Message:
            nonlocal finished, timed_out
            if finished:  # body done: later receive() calls wait for a disconnect, which may take any time
                return await receive()
            left = deadline - time.monotonic()
            wait = min(self.idle_s, left)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                timed_out = (
                    f"request body took over {self.total_s:g} s"
                    if left <= self.idle_s
                    else f"request body paused over {self.idle_s:g} s"
                )
                raise _BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                finished = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out is not None:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except _BodyTimeout:
            pass
        except Exception:
            if timed_out is None:
                raise
        if timed_out is not None and not started:
            await send_json_error(send, 408, "request_timeout", timed_out)


class _BodyTimeout(Exception):
    pass
