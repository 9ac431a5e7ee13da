"""One-shot inference: `/localize` (supports + query in one request), `/detect` (memory concepts in a photo),
`/ask` (a personalized answer from the configured VLM backend)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from focuskit.core.episode import Support, validate_supports
from focuskit.server.deps import app_state, json_field, parse_box, require_token
from focuskit.server.errors import ApiError
from focuskit.server.security import read_image
from focuskit.server.state import AppState

router = APIRouter(tags=["inference"], dependencies=[Depends(require_token)])

MAX_INSTANCES = Form(1, description="Boxes per concept at most (several instances, after per-concept NMS)")
SEGMENT = Form(False, description="Also return a mask per box (COCO RLE), from the server's segmenter")


def check_max_instances(state: AppState, value: int) -> int:
    """1..`max_instances_limit`, else 422 naming both."""
    limit = state.settings.max_instances_limit
    if isinstance(value, bool) or not 1 <= value <= limit:
        raise ApiError(422, "invalid_request", f"max_instances must be in 1..{limit}, got {value}")
    return value


@router.post("/localize", summary="Find the supports' object in a query photo")
async def localize(
    request: Request,
    query: UploadFile = File(..., description="Photo to search"),
    supports: list[UploadFile] = File(default=[], description="Support photos, one box each"),
    boxes: str = Form("[]", description="JSON list of [x1,y1,x2,y2] (pixels), one per support"),
    concept: str | None = Form(None, description="Use a stored concept's views as supports instead of uploads"),
    engine: str = Form("matching", description="Localizer engine"),
    max_instances: int = MAX_INSTANCES,
    segment: bool = SEGMENT,
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    check_max_instances(state, max_instances)
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
        from focuskit.core.masks import encode_rle
        from focuskit.models.segmenters import masks_for_boxes
        from focuskit.server.present import concept_color_json

        with state.compute:
            localizer = state.localizer(engine)
            pred = localizer.localize(sups, query_img)
            boxes = [] if pred.box is None else [pred.box, *pred.extra_boxes][:max_instances]
            masks = None
            if segment and boxes:
                masks = masks_for_boxes(state.segmenter(), query_img, np.array([b.to_xyxy() for b in boxes]))
        scores = [float(pred.score), *pred.meta.get("extra_scores", [])]
        instances = [{"box": b.as_list(), "score": round(sc, 4)} for b, sc in zip(boxes, scores, strict=False)]
        if masks is not None:
            for inst, m in zip(instances, masks, strict=True):
                inst["mask"] = encode_rle(m)
        tau = getattr(localizer, "tau", None)
        out = {
            **pred.to_json(),
            "instances": instances,
            "tau": None if tau is None else round(float(tau), 4),
            "engine": engine,
            "width": query_img.width,
            "height": query_img.height,
        }
        if concept is not None:
            out.update(concept=concept, **concept_color_json(state.memory.color(concept)))
        return out

    return await run_in_threadpool(run)


@router.post("/detect", summary="Find the memory's concepts in a photo")
async def detect(
    request: Request,
    image: UploadFile = File(..., description="Photo"),
    concepts: str = Form("", description="Comma-separated concept names to look for (default: all)"),
    max_instances: int = MAX_INSTANCES,
    segment: bool = SEGMENT,
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    check_max_instances(state, max_instances)
    img = await read_image(image, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field="image")
    wanted = [c.strip() for c in concepts.split(",") if c.strip()] or None
    if wanted:
        unknown = [c for c in wanted if c not in state.memory]
        if unknown:
            raise ApiError(404, "not_found", f"unknown concept(s) {unknown}; concepts: {state.memory.names()}")

    def run() -> dict[str, Any]:
        from focuskit.server.present import detections_json, near_misses_json

        with state.compute:
            detector = state.detector(segment=segment)
            dets = detector.detect(img, wanted, max_instances=max_instances)
        tau = float(detector.config.tau)
        return {
            "width": img.width,
            "height": img.height,
            "tau": round(tau, 4),
            "detections": detections_json(state.memory, dets),
            "near_misses": near_misses_json(dets, tau, state.memory),
        }

    return await run_in_threadpool(run)


@router.post("/ask", summary="Ask a question about a photo; known concepts are named in the answer")
async def ask(
    request: Request,
    image: UploadFile = File(..., description="Photo"),
    question: str = Form(..., min_length=1, max_length=2000, description="The question"),
    max_instances: int = MAX_INSTANCES,
) -> dict[str, Any]:
    state = app_state(request)
    s = state.settings
    check_max_instances(state, max_instances)
    if not question.strip():
        raise ApiError(422, "invalid_request", "the question is empty: ask something about the photo")
    state.check_backend()  # 503 with how to configure one, before reading the upload
    img = await read_image(image, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels, field="image")

    def run() -> dict[str, Any]:
        from focuskit.server.adapters import CappedDetector, personalized_answer

        backend = state.backend()  # built on first use, in this worker thread, not on the event loop
        with state.compute:
            detector = CappedDetector(state.detector(), max_instances)
            return personalized_answer(state.memory, detector, backend, img, question, test_model=state.test_model)

    return await run_in_threadpool(run)
