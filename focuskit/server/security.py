"""The server's guards: bearer token, path containment, upload size / type / pixel checks, request body limit.

The server holds someone's photo library, so every input from a request is treated as hostile:
* a path in a request is only ever a *relative* name inside a directory the server was started with; it is checked
  syntactically (no absolute paths, no `..`, no hidden parts, no backslashes or NUL) and then again after resolving
  symlinks (the real file must still be inside), so `../`, `%2e%2e`, `/etc/passwd` and a symlink pointing out of the
  library all fail;
* an upload must declare an image content type (415 otherwise), fit the byte limit (413), be a format from a short
  list (Pillow's EPS/PSD/... plugins are never reached), fit the pixel limit before it is decoded (413: a
  decompression bomb is refused from its header), and decode (422);
* a whole request body is capped before parsing, so a huge upload is refused without being spooled to disk.
"""

from __future__ import annotations

import hmac
import io
import re
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import Request, UploadFile
from PIL import Image, UnidentifiedImageError

from focuskit.core.errors import ImageError
from focuskit.core.image import load_image
from focuskit.server.errors import ApiError

ALLOWED_CONTENT_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff", "image/x-ms-bmp"}
)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""Pillow plugins a request may reach (phone MPO files open through the JPEG plugin)."""
_DRIVE = re.compile(r"^[A-Za-z]:")


# --- token ------------------------------------------------------------------------------------------------
def check_token(request: Request, token: str | None) -> None:
    """Raise 401 unless `Authorization: Bearer <token>` matches (constant-time); no-op when no token is set."""
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401, "unauthorized", "this server needs a token: send the header 'Authorization: Bearer <token>'"
        )
    if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
        raise ApiError(401, "unauthorized", "wrong token in the Authorization header")


# --- paths ------------------------------------------------------------------------------------------------
def check_relative(rel: str, *, what: str = "path") -> list[str]:
    """The parts of a request-supplied relative path; 400 for anything that could climb out or hide."""
    if not rel or "\x00" in rel:
        raise ApiError(400, "invalid_path", f"{what} must be a non-empty relative path, got {rel!r}")
    if rel.startswith(("/", "\\", "~")) or _DRIVE.match(rel):
        raise ApiError(400, "invalid_path", f"{what} must be relative to the library folder, got the absolute {rel!r}")
    if "\\" in rel:
        raise ApiError(400, "invalid_path", f"{what} must use '/' separators, got {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ApiError(400, "invalid_path", f"{what} may not contain empty, '.' or '..' parts, got {rel!r}")
    if any(p.startswith(".") for p in parts):
        raise ApiError(400, "invalid_path", f"{what} may not name hidden files or folders, got {rel!r}")
    return parts


def safe_path(base: Path, rel: str, *, what: str = "path", forbidden: tuple[Path, ...] = ()) -> Path:
    """`base/rel` as a real existing file inside `base` (symlinks resolved), or a 400/403/404 `ApiError`.

    `forbidden` are folders inside `base` that must not be served either (the index state, the concept memory).
    """
    parts = check_relative(rel, what=what)
    root = base.resolve()
    candidate = root.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ApiError(404, "not_found", f"{what} {rel!r} does not exist in the library") from None
    if not real.is_relative_to(root) or any(real.is_relative_to(f.resolve()) for f in forbidden):
        raise ApiError(403, "forbidden_path", f"{what} {rel!r} leads outside the library folder")
    if not real.is_file():
        raise ApiError(404, "not_found", f"{what} {rel!r} is not a file")
    return real


# --- uploads ----------------------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


async def read_upload(upload: UploadFile, *, max_bytes: int, field: str) -> bytes:
    """The bytes of an uploaded image after the content-type (415) and size (413) checks."""
    name = upload.filename or field
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if ctype not in ALLOWED_CONTENT_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{field} ({name}) has content type {ctype or 'none'!r}; expected an image: "
            + ", ".join(sorted(t for t in ALLOWED_CONTENT_TYPES if t != "image/jpg")),
        )
    if upload.size is not None and upload.size > max_bytes:
        raise ApiError(
            413,
            "upload_too_large",
            f"{field} ({name}) is {_mb(upload.size)}, over the upload limit of {_mb(max_bytes)}",
        )
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "upload_too_large", f"{field} ({name}) is over the upload limit of {_mb(max_bytes)}")
    if not data:
        raise ApiError(422, "bad_image", f"{field} ({name}) is empty")
    return data


def decode_image(data: bytes, *, max_pixels: int, field: str, name: str = "") -> Image.Image:
    """Decode after checking the format and the pixel count from the header (413 before any pixel is decoded)."""
    label = f"{field} ({name})" if name else field
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as exc:  # Pillow refuses from the header alone: it is too large, not broken
        raise ApiError(413, "image_too_large", f"{label}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(
            422, "bad_image", f"{label} is not a decodable image (accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
        )
    try:
        return load_image(data, max_pixels=max_pixels, what=label)
    except ImageError as exc:
        raise ApiError(422, "bad_image", str(exc)) from None


async def read_image(upload: UploadFile, *, max_bytes: int, max_pixels: int, field: str) -> Image.Image:
    data = await read_upload(upload, max_bytes=max_bytes, field=field)
    return decode_image(data, max_pixels=max_pixels, field=field, name=upload.filename or "")


# --- whole-body limit -------------------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, from Content-Length when given, else while
    streaming (chunked uploads), before the multipart parser spools them to disk."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = (
            '{"error": "request_too_large", "message": "request body is over the limit of '
            + f'{self.max_bytes:,} bytes"'
            + "}"
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app turned our exception into some response: replace it
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send)
