"""`create_app(settings) -> FastAPI`: the HTTP API and the web page over one concept memory and photo library.

The app is thin: routes parse and check input (see `security.py`), call the library (memory, index, localizers,
detector, backends), and return JSON or images. Errors follow one JSON shape (`errors.py`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import focuskit
from focuskit.server.errors import install_error_handlers
from focuskit.server.guards import BodyDeadline, HostOriginGuard
from focuskit.server.routes import concepts, inference, library, meta
from focuskit.server.routes.meta import STATIC_DIR
from focuskit.server.security import BodySizeLimit
from focuskit.server.settings import ServerSettings
from focuskit.server.state import AppState

log = logging.getLogger("focuskit.server")

FORM_OVERHEAD_BYTES = 1_000_000
"""Room for the multipart framing and the text fields on top of the files themselves."""


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the app. Opens (or creates) the memory now, so a bad memory directory fails before serving."""
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.index_on_start and state.index is not None:
            state.start_indexing()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="focuskit",
        version=focuskit.__version__,
        description="Personal visual search: teach objects from a few boxed photos, find them in a photo library.",
        docs_url=None,  # served by meta.docs from local files
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.focuskit = state
    install_error_handlers(app)
    # The last added runs first: Host/Origin are judged before any body byte is read, and the body's size and pace
    # are enforced before routing (hence before the token is checked).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes * settings.max_files + FORM_OVERHEAD_BYTES)
    app.add_middleware(BodyDeadline, idle_s=settings.body_idle_timeout_s, total_s=settings.body_timeout_s)
    app.add_middleware(
        HostOriginGuard,
        bind_host=settings.host,
        allow_hosts=settings.allow_hosts,
        allow_origins=settings.allow_origins,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    try:
        from swagger_ui_bundle import swagger_ui_path

        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
        app.state.swagger_assets = True
    except ImportError:
        app.state.swagger_assets = False
    for module in (meta, concepts, inference, library):
        app.include_router(module.router)
    return app
