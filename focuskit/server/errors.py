"""Every error leaves the server as JSON `{"error": code, "message": text}` with a 4xx status, never a traceback.

`ApiError` carries an explicit status (401, 404, 409, 413, 415, 503 ...). A `FocusError` from the library (a bad box,
an undecodable image, an unknown concept) is the user's input being wrong: 422 with its message. Request validation
errors name the field. Anything else is a bug: it is logged with its traceback on the server and answered with a
generic 500 that reveals nothing about the machine.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from focuskit.core.errors import BackendError, FocusError, ImageError, ModelError

log = logging.getLogger("focuskit.server")


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class NotFound(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


_FOCUS_STATUS: list[tuple[type[FocusError], int, str]] = [
    (ImageError, 422, "bad_image"),
    (BackendError, 502, "backend_error"),
    (ModelError, 503, "model_unavailable"),
]


def focus_status(exc: FocusError) -> tuple[int, str]:
    for cls, status, code in _FOCUS_STATUS:
        if isinstance(exc, cls):
            return status, code
    return 422, "invalid_input"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(FocusError)
    async def _focus_error(request: Request, exc: FocusError) -> JSONResponse:
        status, code = focus_status(exc)
        return error_response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error (details are in the server log)")
