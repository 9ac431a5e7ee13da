"""One-shot inference: `/localize` (supports + query in one request), `/detect` (memory concepts in a photo),
`/ask` (a personalized answer from the configured VLM backend)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from focuskit.core.episode import Support, validate_supports
from focuskit.server.deps import app_state, json_field, parse_box, require_token
from focuskit.server.errors import ApiError
from focuskit.server.security import read_image

router = APIRouter(tags=["inference"], dependencies=[Depends(require_token)])


@router.post("/localize", summary="Find the supports' object in a query photo")
async def localize(
    request: Request,
    query: UploadFile = File(..., description="Photo to search"),
    supports: list[UploadFile] = File(default=[], description="Support photos, one box each"),
    boxes: str = Form("[]", description="JSON list of [x1,y1,x2,y2] (pixels), one per support"),
    concept: str | None = Form(None, description="Use a stored concept's views as supports instead of uploads"),
    engine: str = Form("matching", description="Localizer engine"),
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    box_list = json_field(boxes, "boxes", expect=list, default=[])
    if len(supports) + 1 > s.max_files:
        raise ApiError(413, "too_many_files", f"{len(supports) + 1} images given, the limit is {s.max_files}")
    if concept is not None and supports:
        raise ApiError(422, "invalid_request", "give either uploaded supports or a concept name, not both")
    if concept is None and not supports:
        raise ApiError(422, "invalid_request", "no supports: upload supports with boxes, or name a concept")
    if len(box_list) != len(supports):
        raise ApiError(
            422,
            "invalid_request",
            f"got {len(supports)} supports and {len(box_list)} boxes: give exactly one box per support",
        )
    support_list = []
    for i, (upload, raw) in enumerate(zip(supports, box_list, strict=True)):
        box = parse_box(raw, f"boxes[{i}]")
        if box is None:
            raise ApiError(422, "invalid_request", f"boxes[{i}] is null: every support needs its box")
        img = await read_image(upload, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field=f"supports[{i}]")
        support_list.append(Support(img, box))
    query_img = await read_image(query, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field="query")

    def run() -> dict[str, Any]:
        if concept is not None:
            if concept not in state.memory:
                raise ApiError(404, "not_found", f"no concept {concept!r}")
            sups = state.memory.supports(concept)
        else:
            sups = validate_supports(support_list)
        with state.compute:
            pred = state.localizer(engine).localize(sups, query_img)
        return {**pred.to_json(), "engine": engine, "width": query_img.width, "height": query_img.height}

    return await run_in_threadpool(run)


@router.post("/detect", summary="Find the memory's concepts in a photo")
async def detect(
    request: Request,
    image: UploadFile = File(..., description="Photo"),
    concepts: str = Form("", description="Comma-separated concept names to look for (default: all)"),
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    img = await read_image(image, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field="image")
    wanted = [c.strip() for c in concepts.split(",") if c.strip()] or None
    if wanted:
        unknown = [c for c in wanted if c not in state.memory]
        if unknown:
            raise ApiError(404, "not_found", f"unknown concept(s) {unknown}; concepts: {state.memory.names()}")

    def run() -> dict[str, Any]:
        with state.compute:
            dets = state.detector().detect(img, wanted)
        return {"width": img.width, "height": img.height, "detections": dets.to_json()}

    return await run_in_threadpool(run)


@router.post("/ask", summary="Ask a question about a photo; known concepts are named in the answer")
async def ask(
    request: Request,
    image: UploadFile = File(..., description="Photo"),
    question: str = Form(..., min_length=1, max_length=2000, description="The question"),
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    backend = state.backend()  # 503 with how to configure one, before reading the upload
    img = await read_image(image, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field="image")

    def run() -> dict[str, Any]:
        from focuskit.server.adapters import personalized_answer

        with state.compute:
            return personalized_answer(state.memory, state.detector(), backend, img, question)

    return await run_in_threadpool(run)
