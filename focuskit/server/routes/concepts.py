"""Concepts: create from uploaded photos (and/or library photos) with boxes, list, rename, delete, view thumbnails."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, Field

from focuskit.core.errors import ConceptNameError
from focuskit.core.names import check_concept_name
from focuskit.server.deps import app_state, json_field, parse_box, require_token
from focuskit.server.errors import ApiError, NotFound
from focuskit.server.imaging import image_response
from focuskit.server.present import concept_color_json, view_source
from focuskit.server.routes.library import load_library_image
from focuskit.server.security import read_image
from focuskit.server.state import AppState

router = APIRouter(tags=["concepts"], dependencies=[Depends(require_token)])


class PruneRequest(BaseModel):
    """Views to drop: by id (`view_id` in the concept's JSON) and/or every view flagged as an outlier."""

    view_ids: list[int] = Field(default_factory=list, description="Views to drop, by view_id")
    outliers: bool = Field(default=False, description="Also drop every view flagged as an outlier")


class ConceptPatch(BaseModel):
    """Fields to change; omitted ones stay."""

    name: str | None = Field(default=None, description="New name")
    context: str | None = Field(default=None, description="New context text given to the VLM")


def concept_json(request: Request, name: str) -> dict[str, Any]:
    """A concept as the API shows it: its color (stored slot, hex and name), context and views.

    A view's `source` never carries a server path: a file name, a library-relative path (views picked from the
    library) or "upload". Each view has its leave-one-out `consistency` with the other views and an `outlier` flag
    (`ConceptMemory.view_consistency`), which the page shows next to a prune action.
    """
    state = app_state(request)
    memory = state.memory
    info = memory.get(name)
    views = memory.views(name)
    consistency = {c.view_id: c for c in memory.view_consistency(name)}
    base = f"/concepts/{quote(info.name, safe='')}/views"
    color = concept_color_json(info.color)
    return {
        "name": info.name,
        "context": info.context,
        "color": color["color"],
        "color_name": color["color_name"],
        "color_slot": info.color,
        "vectors": info.vectors,
        "views": [
            {
                "index": i,
                "view_id": v.id,
                **view_source(v.source),
                "how": v.how,
                "box": v.box.as_list(),
                "size": [v.image.width, v.image.height],
                "has_mask": v.mask is not None,
                "thumbnail": f"{base}/{i}/thumbnail",
                **_consistency_json(consistency.get(v.id)),
            }
            for i, v in enumerate(views)
        ],
    }


def _consistency_json(c: Any) -> dict[str, Any]:
    """A view's leave-one-out agreement with the concept's other views (None with one view) and outlier flag."""
    if c is None:
        return {"consistency": None, "outlier": False, "outlier_reason": ""}
    return {
        "consistency": None if c.score is None else round(float(c.score), 4),
        "outlier": bool(c.outlier),
        "outlier_reason": c.reason,
    }


def check_name(name: str) -> str:
    """The shared name rule (`focuskit.core.names`): 422 naming what is wrong."""
    try:
        return check_concept_name(name)
    except ConceptNameError as exc:
        raise ApiError(422, "invalid_name", str(exc)) from None


def _unknown(request: Request, name: str) -> NotFound:
    known = app_state(request).memory.names()
    return NotFound(f"no concept {name!r}; concepts: {', '.join(repr(n) for n in known[:20]) or 'none'}")


@router.get("/concepts", summary="List concepts with their views")
def list_concepts(request: Request) -> dict[str, Any]:
    memory = app_state(request).memory
    return {"encoder": memory.encoder_name, "concepts": [concept_json(request, n) for n in memory.names()]}


@router.post("/concepts", status_code=201, summary="Create a concept from photos with boxes")
async def create_concept(
    request: Request,
    name: str = Form(..., description="Concept name, e.g. 'my red mug'"),
    context: str = Form("", description="What the VLM should know about it"),
    boxes: str = Form("[]", description="JSON list, one [x1,y1,x2,y2] (pixels) or null (find it) per uploaded image"),
    library_images: str = Form(
        "[]", description='JSON list of {"path": relative library path, "frame": int|null, "box": [x1,y1,x2,y2]|null}'
    ),
    replace: bool = Form(False, description="Replace an existing concept of that name"),
    segment: bool = Form(False, description="Store a mask with each view, from the server's segmenter"),
    images: list[UploadFile] = File(default=[], description="Reference photos"),
) -> dict[str, Any]:
    state = app_state(request)
    if check_name(name) in state.memory and not replace:  # answered now, not after the photos are read and segmented
        raise ApiError(
            409, "concept_exists", f"concept {name.strip()!r} already exists: pick another name or send replace=true"
        )
    views, view_boxes, sources = await read_views(state, images, boxes, library_images)

    def add() -> dict[str, Any]:
        # One writer at a time in this process (the memory's file lock covers other processes); the compute slot is
        # taken first, always in that order, so a writer never waits for a slot while holding the write lock.
        with state.compute, state.write_lock:
            clean = check_name(name)
            if clean in state.memory and not replace:
                raise ApiError(
                    409, "concept_exists", f"concept {clean!r} already exists: pick another name or send replace=true"
                )
            report = state.memory.add(
                clean,
                views,
                boxes=view_boxes,
                context=context,
                replace=replace,
                sources=sources,
                segmenter=state.segmenter() if segment else None,
            )
            # Answer with what was committed, read under the same lock: a DELETE racing this request waits for it,
            # so the reply never contradicts the write (it used to 422 when the DELETE slipped in between).
            return concept_json(request, report.name)

    return await run_in_threadpool(add)


async def read_views(
    state: AppState, images: list[UploadFile], boxes: str, library_images: str
) -> tuple[list[Image.Image], list[Any], list[str]]:
    """The reference photos of a request (uploads, then library picks), their boxes (None: find it) and the source
    label each view is stored with: "upload", or the library-relative path (and frame) of a pick."""
    settings = state.settings
    box_list = json_field(boxes, "boxes", expect=list, default=[])
    picks = json_field(library_images, "library_images", expect=list, default=[])
    if len(images) + len(picks) > settings.max_files:
        raise ApiError(
            413, "too_many_files", f"{len(images) + len(picks)} views given, the limit is {settings.max_files}"
        )
    if len(box_list) != len(images):
        raise ApiError(
            422,
            "invalid_request",
            f"got {len(images)} images and {len(box_list)} boxes: give one box (or null) per image",
        )
    if not images and not picks:
        raise ApiError(422, "invalid_request", "no views: upload images (with boxes) or pick library_images")
    views, view_boxes, sources = [], [], []
    for i, (upload, raw) in enumerate(zip(images, box_list, strict=True)):
        view_boxes.append(parse_box(raw, f"boxes[{i}]"))
        views.append(
            await read_image(
                upload, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels, field=f"images[{i}]"
            )
        )
        sources.append("upload")
    for i, pick in enumerate(picks):
        if not isinstance(pick, dict) or not isinstance(pick.get("path"), str):
            raise ApiError(
                422, "invalid_request", f'library_images[{i}] must be {{"path": ..., "box": ...}}, got {pick!r}'
            )
        frame = pick.get("frame")
        if frame is not None and (not isinstance(frame, int) or isinstance(frame, bool)):
            raise ApiError(
                422, "invalid_request", f"library_images[{i}].frame must be an integer or null, got {frame!r}"
            )
        view_boxes.append(parse_box(pick.get("box"), f"library_images[{i}].box"))
        views.append(await run_in_threadpool(load_library_image, state, pick["path"], frame))
        sources.append(pick["path"] if frame is None else f"{pick['path']} @ frame {frame}")
    return views, view_boxes, sources


@router.post("/autobox", summary="Find the object (box, and mask if asked) in reference photos; nothing is saved")
async def autobox(
    request: Request,
    boxes: str = Form("[]", description="JSON list, one [x1,y1,x2,y2] (kept) or null (find it) per uploaded image"),
    library_images: str = Form("[]", description='JSON list of {"path", "frame", "box"} as for POST /concepts'),
    segment: bool = Form(False, description="Also return a mask (COCO RLE) per view"),
    images: list[UploadFile] = File(default=[], description="Reference photos"),
) -> dict[str, Any]:
    """What `POST /concepts` would use as each view's region, for the user to check and edit before saving."""
    state = app_state(request)
    views, view_boxes, _ = await read_views(state, images, boxes, library_images)

    def run() -> dict[str, Any]:
        from focuskit.server.teaching import find_views

        with state.compute:
            found = find_views(state.memory, views, view_boxes, state.segmenter() if segment else None)
        return {
            "views": [{**f.to_json(), "width": v.width, "height": v.height} for f, v in zip(found, views, strict=True)]
        }

    return await run_in_threadpool(run)


@router.get("/concepts/{name}/views/{index}/thumbnail", name="concept_thumbnail", summary="A view's thumbnail (JPEG)")
def concept_thumbnail(request: Request, name: str, index: int) -> Any:
    memory = app_state(request).memory
    if name not in memory:
        raise _unknown(request, name)
    views = memory.views(name)
    if not 0 <= index < len(views):
        raise NotFound(f"concept {name!r} has {len(views)} view(s); no view {index}")
    return image_response(views[index].thumbnail)


@router.get("/concepts/{name}", summary="One concept")
def get_concept(request: Request, name: str) -> dict[str, Any]:
    if name not in app_state(request).memory:
        raise _unknown(request, name)
    return concept_json(request, name)


@router.patch("/concepts/{name}", summary="Rename a concept or change its context")
def patch_concept(request: Request, name: str, patch: ConceptPatch) -> dict[str, Any]:
    state = app_state(request)
    with state.write_lock:
        if name not in state.memory:
            raise _unknown(request, name)
        current = name
        if patch.name is not None and check_name(patch.name) != name:
            if patch.name.strip() in state.memory:
                raise ApiError(
                    409, "concept_exists", f"cannot rename {name!r}: a concept {patch.name.strip()!r} exists"
                )
            state.memory.rename(name, patch.name)
            current = patch.name.strip()
        if patch.context is not None:
            state.memory.set_context(current, patch.context)
    return concept_json(request, current)


@router.delete("/concepts/{name}", summary="Delete a concept")
def delete_concept(request: Request, name: str) -> dict[str, Any]:
    state = app_state(request)
    with state.write_lock:
        if name not in state.memory:
            raise _unknown(request, name)
        state.memory.remove(name)
    return {"deleted": name}


@router.post("/concepts/{name}/prune", summary="Drop views of a concept: chosen ones and/or the outliers")
def prune_concept(request: Request, name: str, body: PruneRequest) -> dict[str, Any]:
    """Removes views (one transaction); 422 for ids of other concepts or pruning every view (delete it instead)."""
    state = app_state(request)
    if not body.view_ids and not body.outliers:
        raise ApiError(422, "invalid_request", 'nothing to prune: give "view_ids" and/or "outliers": true')
    with state.write_lock:
        if name not in state.memory:
            raise _unknown(request, name)
        report = state.memory.prune(name, view_ids=body.view_ids, outliers=body.outliers)
        return {"removed": report.removed, "kept": report.kept, "concept": concept_json(request, name)}
