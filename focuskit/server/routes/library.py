"""Library: index status, (re)indexing, browsing, search hits, and image / thumbnail / annotated-image downloads.

Files are addressed by their path relative to the library folder; `security.safe_path` is the only way such a path
reaches the file system. A video frame is addressed by its path plus `frame`, which must be one of the frames the
index sampled (so a request cannot make the server decode a video up to an arbitrary frame number).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from PIL import Image

from focuskit.core.errors import ImageError
from focuskit.core.image import load_image
from focuskit.core.media import IMAGE_MEDIA_TYPES, media_kind
from focuskit.library.media import read_frame
from focuskit.server.deps import app_state, require_token
from focuskit.server.errors import ApiError, NotFound
from focuskit.server.imaging import image_response, thumbnail
from focuskit.server.present import concept_color_json
from focuskit.server.security import safe_path
from focuskit.server.state import AppState

NEAR_MISSES = 3
"""Photos below the threshold reported with a search (the best ones)."""

router = APIRouter(prefix="/library", tags=["library"], dependencies=[Depends(require_token)])


def _url(kind: str, path: str, frame: int | None) -> str:
    url = f"/library/{kind}/{quote(path)}"
    return url if frame is None else f"{url}?frame={frame}"


def resolve_media(state: AppState, path: str, frame: int | None) -> tuple[Any, str]:
    """The real file for a library path (containment-checked) and its kind; for videos, `frame` must be indexed."""
    _, root = state.require_index()
    real = safe_path(root, path, what="library path", forbidden=state.protected_dirs)
    kind = media_kind(real)
    if kind is None:
        raise ApiError(415, "unsupported_media_type", f"library path {path!r} is not a photo or video")
    if kind == "image" and frame is not None:
        raise ApiError(422, "invalid_request", f"{path!r} is a photo: it has no frame {frame}")
    if kind == "video":
        if frame is None:
            raise ApiError(422, "invalid_request", f"{path!r} is a video: give the frame number (?frame=N)")
        index, _ = state.require_index()
        frames = {it.frame for it in index.store.items(root=str(root), file_path=path)}
        if frame not in frames:
            raise NotFound(f"frame {frame} of {path!r} is not in the index (indexed frames: {sorted(frames)[:10]})")
    return real, kind


def load_library_image(state: AppState, path: str, frame: int | None) -> Image.Image:
    """Pixels of a library photo or indexed video frame, with the server's pixel limit."""
    real, kind = resolve_media(state, path, frame)
    try:
        if kind == "video" and frame is not None:  # resolve_media refuses a video without a frame
            return read_frame(real, frame)
        return load_image(real, max_pixels=state.settings.max_pixels, what=f"library photo {path}")
    except ImageError as exc:
        raise ApiError(422, "bad_image", str(exc)) from None


@router.get("/status", summary="Library folder, index counts and the background indexing job")
def status(request: Request) -> dict[str, Any]:
    state = app_state(request)
    if state.index is None:
        return {"library": None, "index": None, "indexing": state.job.to_json()}
    return {"library": str(state.library_dir), "index": state.index.status(), "indexing": state.job.to_json()}


@router.post("/index", status_code=202, summary="Start (re)indexing the library in the background")
def start_index(request: Request, reindex: bool = Query(False, description="Recompute every file")) -> dict[str, Any]:
    state = app_state(request)
    if not state.start_indexing(reindex=reindex):
        raise ApiError(409, "indexing_running", "an indexing run is already in progress; poll /library/status")
    return {"started": True, "indexing": state.job.to_json()}


@router.get("/items", summary="Indexed photos and video frames, for browsing and picking views")
def items(request: Request, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    state = app_state(request)
    index, root = state.require_index()
    rows = index.items(root)
    rows.sort(key=lambda r: (r.path, r.frame or 0))
    page = rows[offset : offset + limit]
    return {
        "total": len(rows),
        "items": [
            {
                "path": r.path,
                "frame": r.frame,
                "time_s": r.time_s,
                "width": r.width,
                "height": r.height,
                "image_url": _url("image", r.path, r.frame),
                "thumbnail_url": _url("thumbnail", r.path, r.frame),
            }
            for r in page
        ],
    }


@router.get("/search", summary="Photos where a concept appears, best first, from the stored features")
def search(
    request: Request,
    concept: str = Query(..., description="Concept name"),
    tau: float | None = Query(None, ge=-1.0, le=1.0, description="Score threshold (default: the library's)"),
    top: int = Query(50, ge=1, le=10000),
) -> dict[str, Any]:
    state = app_state(request)
    index, root = state.require_index()
    if concept not in state.memory:
        raise NotFound(
            f"no concept {concept!r}; concepts: {', '.join(repr(n) for n in state.memory.names()) or 'none'}"
        )
    used_tau = index.config.tau if tau is None else tau
    hits = index.search(concept, state.memory, tau=tau, top=top, root=root)
    # The best photos that just missed ("box_f0390.jpg 0.64, below 0.66") show whether a lower threshold would help.
    # A second search with no threshold (the stored features only: cheap); its boxes are not the hits' boxes, since
    # a hit's boxes are its proposals above the threshold, so only its ranking and scores are used.
    misses = []
    if len(hits) < top:
        ranked = index.search(concept, state.memory, tau=-1.0, top=len(hits) + NEAR_MISSES, root=root)
        misses = [h for h in ranked if h.score < used_tau][:NEAR_MISSES]

    def item_json(h: Any) -> dict[str, Any]:
        item = h.to_json()
        item.pop("image")  # the absolute path stays on the server
        item["image_url"] = _url("image", h.path, h.frame)
        item["annotated_url"] = (
            _url("annotated", h.path, h.frame) + ("&" if h.frame is not None else "?") + f"concept={quote(concept)}"
        )
        return item

    return {
        "concept": concept,
        "tau": used_tau,
        **concept_color_json(state.memory.color(concept)),
        "hits": [item_json(h) for h in hits],
        "near_misses": [
            {"path": h.path, "frame": h.frame, "time_s": h.time_s, "score": round(h.score, 4)} for h in misses
        ],
    }


@router.get("/image/{path:path}", summary="A library photo (original file) or an indexed video frame (JPEG)")
async def image(request: Request, path: str, frame: int | None = Query(None, ge=0)) -> Response:
    state = app_state(request)
    real, kind = await run_in_threadpool(resolve_media, state, path, frame)
    if kind == "image":
        media_type = IMAGE_MEDIA_TYPES.get(real.suffix.lower(), "application/octet-stream")
        return FileResponse(real, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})
    img = await run_in_threadpool(load_library_image, state, path, frame)
    return image_response(img, cache=True)


@router.get("/thumbnail/{path:path}", summary="A small JPEG of a library photo or frame")
async def thumb(
    request: Request, path: str, frame: int | None = Query(None, ge=0), size: int = Query(256, ge=16, le=1024)
) -> Response:
    state = app_state(request)
    img = await run_in_threadpool(load_library_image, state, path, frame)
    return image_response(await run_in_threadpool(thumbnail, img, size), cache=True)


@router.get("/annotated/{path:path}", summary="A library photo with a concept's boxes drawn (PNG)")
async def annotated(
    request: Request,
    path: str,
    concept: str = Query(...),
    frame: int | None = Query(None, ge=0),
    tau: float | None = Query(None, ge=-1.0, le=1.0),
) -> Response:
    state = app_state(request)
    index, root = state.require_index()
    if concept not in state.memory:
        raise NotFound(f"no concept {concept!r}")

    def render() -> Image.Image:
        from focuskit.viz.draw import draw_boxes, palette_color

        img = load_library_image(state, path, frame)
        hits = [h for h in index.search(concept, state.memory, tau=tau, root=root, path=path) if h.frame == frame]
        boxes = list(hits[0].boxes) if hits else []
        labels = [f"{concept} {s:.2f}" for s in (hits[0].scores if hits else [])]
        color = palette_color(state.memory.color(concept))[1]
        return draw_boxes(img, boxes, labels, [color] * len(boxes))

    return image_response(await run_in_threadpool(render), "PNG")
