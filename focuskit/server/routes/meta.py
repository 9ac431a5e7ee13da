"""The web page, health, and the API docs (Swagger UI served from a local package, so it works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

import focuskit
from focuskit.server.deps import app_state, require_token

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["meta"])


@router.get("/", include_in_schema=False)
def index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/health", dependencies=[Depends(require_token)], summary="Server status and capabilities")
def health(request: Request) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    return {
        "status": "ok",
        "version": focuskit.__version__,
        "library": state.library_dir is not None,
        "concepts": len(state.memory),
        "encoder": state.memory.encoder_name,
        "engines": s.engines,
        "backend": s.backend.kind,
        "backend_model": s.backend.model,
        "test_model": state.test_model,
        "segmenter": s.segmenter,
        "max_instances_limit": s.max_instances_limit,
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_files": s.max_files, "max_pixels": s.max_pixels},
    }


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI from the `swagger-ui-bundle` package's files (mounted at /docs-assets), no CDN."""
    if not getattr(request.app.state, "swagger_assets", False):
        return HTMLResponse(
            "<p>API docs need the swagger-ui-bundle package; "
            "the schema is at <a href='/openapi.json'>/openapi.json</a>.</p>"
        )
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="focuskit API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
