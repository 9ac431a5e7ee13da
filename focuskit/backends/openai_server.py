"""A small OpenAI-compatible `/v1/chat/completions` server over any `VLMBackend` (FastAPI + uvicorn).

It lets a local VLM (or the tiny offline model) stand in for vLLM or a hosted API: anything that speaks the OpenAI
chat schema, including `focuskit ask --backend openai`, can use it. Images must come inline as data URLs; the server
never fetches remote URLs. It is deliberately small: no streaming, one generation at a time, the conversation
flattened into one prompt (system text first, earlier turns as "User:"/"Assistant:" lines).

Errors follow OpenAI's shape, `{"error": {"message", "type", "code"}}`: 400 for malformed content, 413 for bodies
or images over the limits, 422 for requests the backend refuses.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from focuskit.backends.base import MAX_INPUT_PIXELS, GenerationOptions, VLMBackend
from focuskit.core.errors import FocusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_images: int = 64
    max_image_pixels: int = MAX_INPUT_PIXELS
    max_tokens: int = 4096


class _ImageURL(BaseModel):
    url: str


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: _ImageURL | str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[_Part] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    focuskit_video: bool = False
    """Extension: the images are consecutive frames of one video (used when the backend reads videos)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


def _decode_data_url(url: str, index: int, limits: ServerLimits) -> Image.Image:
    if not url.startswith("data:"):
        raise _HTTPError(
            400, f"image {index}: only data URLs are accepted (data:image/...;base64,...), got {url[:40]!r}"
        )
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise _HTTPError(400, f"image {index}: the data URL must be base64-encoded")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _HTTPError(400, f"image {index}: invalid base64 in the data URL") from None
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > limits.max_image_pixels:
            raise _HTTPError(
                413,
                f"image {index} is {img.width}x{img.height} = {img.width * img.height:,} pixels, over the "
                f"{limits.max_image_pixels:,}-pixel limit",
            )
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise _HTTPError(400, f"image {index}: cannot decode ({exc})") from None
    return img.convert("RGB")


def parse_request(req: ChatRequest, limits: ServerLimits) -> tuple[list[Image.Image], str]:
    """The images (in order) and one flattened prompt from a chat request."""
    images: list[Image.Image] = []
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for m in req.messages:
        texts: list[str] = []
        parts = [_Part(type="text", text=m.content)] if isinstance(m.content, str) else (m.content or [])
        for part in parts:
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "image_url":
                url = part.image_url.url if isinstance(part.image_url, _ImageURL) else part.image_url
                if not url:
                    raise _HTTPError(400, "an image_url part has no url")
                if len(images) >= limits.max_images:
                    raise _HTTPError(413, f"too many images: the limit is {limits.max_images} per request")
                images.append(_decode_data_url(url, len(images) + 1, limits))
            else:
                raise _HTTPError(400, f"unsupported content part type {part.type!r}; use text or image_url")
        text = "\n".join(t for t in texts if t)
        if m.role == "system":
            system.append(text)
        else:
            turns.append((m.role, text))
    if not turns or turns[-1][0] != "user":
        raise _HTTPError(400, "the last message must come from the user")
    if len(turns) == 1:
        body = turns[0][1]
    else:
        body = "\n".join(f"{'User' if r == 'user' else 'Assistant'}: {t}" for r, t in turns)
    return images, "\n".join([*system, body]) if system else body


def create_app(backend: VLMBackend, *, model_name: str = "focuskit", limits: ServerLimits | None = None) -> FastAPI:
    """The FastAPI app serving `backend` under `model_name`."""
    limits = limits or ServerLimits()
    app = FastAPI(title="focuskit OpenAI-compatible VLM server", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            return _error(
                413, f"request body of {int(length):,} bytes is over the {limits.max_body_bytes:,}-byte limit"
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"invalid request at {where}: {first.get('msg', 'malformed')}")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "backend": backend.name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "focuskit"}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> JSONResponse:
        if req.stream:
            return _error(400, "streaming is not supported by this server; send stream=false")
        try:
            images, prompt = parse_request(req, limits)
        except _HTTPError as exc:
            return _error(exc.status, exc.message, exc.kind)
        max_tokens = min(req.max_completion_tokens or req.max_tokens or 256, limits.max_tokens)
        options = GenerationOptions(max_new_tokens=max_tokens, temperature=req.temperature or 0.0)
        video = bool(req.focuskit_video and backend.supports_video and images)
        try:
            text = await run_in_threadpool(backend.generate, images, prompt, options=options, video=video)
        except FocusError as exc:
            return _error(422, str(exc), "backend_error")
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )

    return app


def serve(
    backend: VLMBackend,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "focuskit",
    limits: ServerLimits | None = None,
) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(create_app(backend, model_name=model_name, limits=limits), host=host, port=port, log_level="warning")
