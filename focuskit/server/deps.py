"""Request-scoped helpers shared by the route modules: the app state, the token guard, JSON form fields."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from focuskit.server.errors import ApiError
from focuskit.server.security import check_token
from focuskit.server.state import AppState


def app_state(request: Request) -> AppState:
    return request.app.state.focuskit


def require_token(request: Request) -> None:
    """Dependency on every API router: 401 unless the bearer token matches (when the server has one)."""
    check_token(request, app_state(request).settings.token)


def json_field(text: str | None, field: str, *, expect: type, default: Any) -> Any:
    """Parse a multipart form field holding JSON; 422 naming the field when it is not JSON of the expected type."""
    if text is None or not text.strip():
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            422, "invalid_request", f"{field} must be JSON ({exc.msg} at char {exc.pos}), got {text[:80]!r}"
        ) from None
    if not isinstance(value, expect):
        raise ApiError(422, "invalid_request", f"{field} must be a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def parse_box(value: Any, field: str) -> Any:
    """A JSON box [x1, y1, x2, y2] -> `Box` (None stays None: 'find it automatically'); 422 for anything else."""
    from focuskit.core.box import Box
    from focuskit.core.errors import BoxError

    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ApiError(422, "invalid_request", f"{field} must be [x1, y1, x2, y2] (numbers), got {value!r}")
    try:
        return Box.from_xyxy(value)
    except BoxError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}") from None
