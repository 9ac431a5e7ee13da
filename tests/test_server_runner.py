"""The real HTTP server (hypercorn via `focuskit.server.runner`) on 127.0.0.1: slow clients are cut off.

Each test opens a raw socket to a server thread on a free loopback port, so nothing leaves the machine. Bounds are
generous (the deadline is 1 s, the client would need several times that to finish), and every socket read has a
timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from focuskit.server import ServerSettings, create_app
from focuskit.server.runner import bind_sockets, hypercorn_config, serve_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("runner")
    settings = ServerSettings(
        memory_dir=tmp / "memory",
        index_on_start=False,
        port=8000,
        token="s3cret-token",  # the deadlines hold before the token is ever looked at
        header_timeout_s=1.0,
        body_idle_timeout_s=1.0,
        body_timeout_s=2.0,
    )
    config = hypercorn_config("127.0.0.1", 0, header_timeout_s=settings.header_timeout_s)
    sockets = bind_sockets(config, "127.0.0.1", 0)
    port = int(sockets.insecure_sockets[0].getsockname()[1])
    stop = threading.Event()

    async def trigger() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)

    thread = threading.Thread(
        target=serve_app, args=(create_app(settings), config, sockets), kwargs={"shutdown_trigger": trigger}
    )
    thread.start()
    for _ in range(200):  # until it listens (the app's start-up runs first)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        stop.set()
        thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _drip(sock: socket.socket, pieces: list[bytes], pause: float) -> int:
    """Send `pieces` with `pause` between them; the number sent before the server closed the connection."""
    for i, piece in enumerate(pieces):
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return i
        time.sleep(pause)
        sock.setblocking(False)
        try:
            if sock.recv(65536, socket.MSG_PEEK) == b"":
                return i + 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return i + 1
        finally:
            sock.setblocking(True)
            sock.settimeout(10)
    return len(pieces)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_normal_request_is_answered(server: int) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret-token\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert _read_all(sock).startswith(b"HTTP/1.1 200")


def test_headers_sent_one_line_at_a_time_are_cut_off(server: int) -> None:
    lines = [b"GET /concepts HTTP/1.1\r\n"] + [f"X-Pad-{i}: {i}\r\n".encode() for i in range(30)]
    with _connect(server) as sock:
        sent = _drip(sock, lines, pause=0.3)  # 9 s in all; the header deadline is 1 s
    assert sent < len(lines), "the server kept a connection open while its headers trickled in"


def test_an_idle_connection_without_a_request_is_closed(server: int) -> None:
    with _connect(server) as sock:
        assert _read_all(sock) == b""  # closed by the server (a hang would raise the 10 s socket timeout)


@pytest.mark.parametrize(
    ("pause", "message"),
    [(1.6, b"paused over 1 s"), (0.5, b"took over 2 s")],
    ids=["silent-body", "slow-body"],
)
def test_a_body_that_stalls_or_drips_gets_408(server: int, pause: float, message: bytes) -> None:
    head = (
        b"POST /concepts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Focuskit: 1\r\nContent-Length: 1000\r\n"
        b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n"
    )
    with _connect(server) as sock:
        sock.sendall(head + b'--zz\r\nContent-Disposition: form-data; name="name"\r\n\r\n')
        sent = _drip(sock, [b"x"] * 12, pause=pause)
        answer = _read_all(sock)
    assert sent < 12
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert message in answer
