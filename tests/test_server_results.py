"""What the API tells about its results (issues 14 and 16): concept colors on every detection, the prompt and the
exact image the VLM got, masks, several instances, auto-boxes before saving, near misses, indexing progress with
an ETA, and view sources without server paths. Real photos, the memory's real encoder."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from focuskit.core.box import Box, iou
from focuskit.server import BackendSettings, ServerSettings, create_app
from focuskit.server.state import IndexJob
from focuskit.viz.draw import COLOR_NAMES, PALETTE, hex_color, palette_color

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
BOX = [296.0, 14.0, 597.0, 242.0]  # the box in box_f0000.jpg
BOX_F0100 = Box(222.0, 20.0, 545.0, 268.0)  # the same box in box_f0100.jpg
CUP = [308.0, 122.0, 413.0, 381.0]  # the cup in cup_f0010.jpg
LOCAL: dict = {"base_url": "http://127.0.0.1:8000", "headers": {"X-Focuskit": "1"}}


class RecordingBackend:
    """A VLM backend that keeps what it was given (the server must show exactly that) and answers a fixed text."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Image.Image], str]] = []

    def generate(self, images: list[Image.Image], prompt: str, options: Any = None) -> str:
        self.calls.append(([im.copy() for im in images], prompt))
        return "the box is on the table"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("results")
    lib = tmp / "library"
    lib.mkdir()
    for name in ("box_f0000.jpg", "box_f0100.jpg", "cup_f0010.jpg", "coffee.jpg"):
        shutil.copy(REAL / name, lib / name)
    return tmp


@pytest.fixture(scope="module")
def client(tree: Path) -> Iterator[TestClient]:
    """Two concepts, the cup first, so "my box" has palette slot 1 (green), not the first color."""
    settings = ServerSettings(
        memory_dir=tree / "memory",
        library_dir=tree / "library",
        index_on_start=False,
        max_instances_limit=5,
        backend=BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1"),  # replaced by a recorder below
    )
    app = create_app(settings)
    with TestClient(app, **LOCAL) as c:
        for name, photo, box in (("my cup", "cup_f0010.jpg", CUP), ("my box", "box_f0000.jpg", BOX)):
            r = c.post("/concepts", data={"name": name, "boxes": json.dumps([box])}, files=[_file("images", photo)])
            assert r.status_code == 201, r.text
        yield c


def _file(field: str, photo: str) -> tuple[str, tuple[str, bytes, str]]:
    return (field, (photo, (REAL / photo).read_bytes(), "image/jpeg"))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _decode(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_palette_color_is_the_prompts_name_and_the_pages_hex() -> None:
    assert palette_color(1) == (COLOR_NAMES[1], PALETTE[1]) == ("green", (60, 180, 75))
    assert palette_color(len(PALETTE) + 2) == palette_color(2)
    assert hex_color((230, 25, 75)) == "#e6194b"


def test_concepts_carry_their_color(client: TestClient) -> None:
    concepts = {c["name"]: c for c in client.get("/concepts").json()["concepts"]}
    assert concepts["my cup"]["color_slot"] == 0 and concepts["my box"]["color_slot"] == 1
    assert concepts["my box"]["color"] == "#3cb44b" and concepts["my box"]["color_name"] == "green"


def test_detect_reports_each_detections_concept_color(client: TestClient) -> None:
    body = client.post("/detect", files=[_file("image", "box_f0100.jpg")]).json()
    box = [d for d in body["detections"] if d["concept"] == "my box"]
    assert len(box) == 1 and iou(Box(*box[0]["box"]), BOX_F0100) > 0.7
    assert box[0]["color"] == "#3cb44b" and box[0]["color_name"] == "green"
    assert "mask" not in box[0]  # masks only when asked


def test_detect_names_the_near_misses_below_the_threshold(client: TestClient) -> None:
    """Nothing of ours in coffee.jpg: no detection, but each concept's best score is reported, below tau."""
    body = client.post("/detect", files=[_file("image", "coffee.jpg")]).json()
    assert body["detections"] == []
    misses = {m["concept"]: m for m in body["near_misses"]}
    assert set(misses) == {"my cup", "my box"}
    assert all(m["score"] < body["tau"] == m["tau"] for m in misses.values())
    assert misses["my box"]["color"] == "#3cb44b"


def test_ask_returns_the_exact_prompt_and_pixels_the_backend_got(client: TestClient) -> None:
    state = client.app.state.focuskit  # type: ignore[attr-defined]
    recorder = RecordingBackend()
    state._backend = recorder
    body = client.post("/ask", data={"question": "Where is my box?"}, files=[_file("image", "box_f0100.jpg")]).json()
    (images, prompt), = recorder.calls  # fmt: skip
    assert body["prompt"] == prompt and body["answer"] == "the box is on the table"
    assert 'enclosed in the green box is called "my box"' in prompt
    shown = Image.open(io.BytesIO(base64.b64decode(body["prompted_image"].split(",", 1)[1])))
    assert body["prompted_image"].startswith("data:image/png;base64,")
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(images[0].convert("RGB")))
    det = next(d for d in body["detections"] if d["concept"] == "my box")
    assert det["color_name"] == "green" and det["color"] == hex_color(PALETTE[1])
    assert body["test_model"] is False and body["backend"] == "recording"


def test_ask_refuses_a_blank_question_before_any_model_runs(client: TestClient) -> None:
    r = client.post("/ask", data={"question": "   "}, files=[_file("image", "box_f0100.jpg")])
    assert r.status_code == 422 and "question is empty" in r.json()["message"]


def test_max_instances_finds_both_copies_of_the_object(client: TestClient) -> None:
    """A photo with the box twice (two crops side by side): one box by default, both with max_instances=2."""
    src = Image.open(REAL / "box_f0000.jpg").convert("RGB").crop((236, 0, 640, 300))
    pair = Image.new("RGB", (src.width * 2 + 40, src.height), (128, 128, 128))
    pair.paste(src, (0, 0))
    pair.paste(src, (src.width + 40, 0))
    image = [("image", ("pair.jpg", _jpeg(pair), "image/jpeg"))]
    one = client.post("/detect", data={"concepts": "my box"}, files=image).json()["detections"]
    two = client.post("/detect", data={"concepts": "my box", "max_instances": "2"}, files=image).json()["detections"]
    assert len(one) == 1 and len(two) == 2
    centers = sorted((d["box"][0] + d["box"][2]) / 2 for d in two)
    assert centers[0] < src.width < centers[1]  # one on each copy
    query = [("query", ("pair.jpg", _jpeg(pair), "image/jpeg"))]
    loc = client.post("/localize", data={"concept": "my box", "max_instances": "2"}, files=query).json()
    assert len(loc["instances"]) == 2 and loc["instances"][0]["box"] == loc["box"]
    assert loc["color"] == "#3cb44b" and loc["concept"] == "my box" and loc["tau"] is not None


@pytest.mark.parametrize("value", ["0", "6", "-1", "two"])
def test_max_instances_out_of_range_is_a_422(client: TestClient, value: str) -> None:
    for route, field in (("/detect", "image"), ("/localize", "query")):
        data = {"max_instances": value, **({"concept": "my box"} if route == "/localize" else {})}
        r = client.post(route, data=data, files=[_file(field, "box_f0100.jpg")])
        assert r.status_code == 422 and set(r.json()) == {"error", "message"}, r.text


def test_segment_returns_a_mask_per_box_that_fits_it(client: TestClient) -> None:
    body = client.post("/detect", data={"segment": "true"}, files=[_file("image", "box_f0100.jpg")]).json()
    det = next(d for d in body["detections"] if d["concept"] == "my box")
    mask = _decode(det["mask"])
    assert mask.shape == (480, 640)
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = det["box"]
    inside = ((xs >= x1 - 2) & (xs <= x2 + 2) & (ys >= y1 - 2) & (ys <= y2 + 2)).mean()
    assert inside > 0.99 and 0.2 < mask.sum() / ((x2 - x1) * (y2 - y1)) < 1.0
    loc = client.post(
        "/localize", data={"concept": "my box", "segment": "true"}, files=[_file("query", "box_f0100.jpg")]
    )
    assert _decode(loc.json()["instances"][0]["mask"]).sum() > 1000


def test_autobox_finds_boxes_and_masks_without_saving(client: TestClient) -> None:
    before = client.get("/concepts").json()
    files = [_file("images", "box_f0000.jpg"), _file("images", "box_f0100.jpg")]
    body = client.post("/autobox", data={"boxes": json.dumps([BOX, None]), "segment": "true"}, files=files).json()
    given, found = body["views"]
    assert given["how"] == "box" and given["box"] == BOX and given["score"] is None
    assert found["how"] == "auto" and 0 <= found["score"] <= 1 and found["box"] is not None
    x1, y1, x2, y2 = found["box"]
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480  # in the photo's own pixels
    for view in (given, found):
        assert view["width"] == 640 and _decode(view["mask"]).sum() > 1000
    assert client.get("/concepts").json() == before  # nothing saved


@pytest.mark.parametrize(
    "data, status",
    [
        ({"boxes": "[]"}, 422),  # one photo, no box entry
        ({"boxes": "[[0, 0, 10]]"}, 422),
        ({"boxes": "[[700, 500, 800, 600]]"}, 422),  # outside the 640x480 photo
        ({"boxes": "not json"}, 422),
    ],
)
def test_autobox_bad_input_is_a_4xx_json(client: TestClient, data: dict[str, str], status: int) -> None:
    r = client.post("/autobox", data=data, files=[_file("images", "box_f0000.jpg")])
    assert r.status_code == status and set(r.json()) == {"error", "message"}, r.text


def test_segment_on_creation_stores_a_mask_with_each_view(client: TestClient) -> None:
    data = {"name": "masked box", "boxes": json.dumps([BOX, None]), "segment": "true"}
    r = client.post("/concepts", data=data, files=[_file("images", "box_f0000.jpg"), _file("images", "box_f0100.jpg")])
    assert r.status_code == 201, r.text
    views = r.json()["views"]
    assert [v["has_mask"] for v in views] == [True, True] and [v["how"] for v in views] == ["box", "auto"]
    assert client.delete("/concepts/masked box").status_code == 200


def test_view_sources_never_show_server_paths(client: TestClient, tree: Path) -> None:
    """A CLI-added view is shown by its file name, an upload as "upload", a library pick by its library path."""
    state = client.app.state.focuskit  # type: ignore[attr-defined]
    outside = tree / "elsewhere" / "deep"
    outside.mkdir(parents=True, exist_ok=True)
    shutil.copy(REAL / "cup_f0080.jpg", outside / "cup_f0080.jpg")
    with state.write_lock:
        state.memory.add("cli cup", [tree / "library" / "cup_f0010.jpg", outside / "cup_f0080.jpg"],
                         boxes=[Box(*CUP), None])  # fmt: skip
    picks = json.dumps([{"path": "box_f0100.jpg", "box": None}])
    r = client.post("/concepts", data={"name": "picked box", "library_images": picks})
    assert r.status_code == 201, r.text
    try:
        text = client.get("/concepts").text
        assert str(tree) not in text and "/elsewhere" not in text
        sources = {
            c["name"]: [(v["source"], v["source_kind"]) for v in c["views"]]
            for c in client.get("/concepts").json()["concepts"]
        }
        assert sources["cli cup"] == [("cup_f0010.jpg", "file"), ("cup_f0080.jpg", "file")]
        assert sources["my box"] == [("upload", "upload")]
        assert sources["picked box"] == [("box_f0100.jpg", "file")]
    finally:
        client.delete("/concepts/cli cup")
        client.delete("/concepts/picked box")


def test_views_show_their_consistency_and_outliers_can_be_pruned(client: TestClient) -> None:
    """Three views of the box and one of the coffee cup: the coffee view is the outlier; pruning drops it."""
    photos = ["box_f0000.jpg", "box_f0100.jpg", "box_f0230.jpg", "coffee.jpg"]
    boxes = [BOX, [222.0, 20.0, 545.0, 268.0], None, None]
    files = [_file("images", p) for p in photos]
    r = client.post("/concepts", data={"name": "mixed box", "boxes": json.dumps(boxes)}, files=files)
    assert r.status_code == 201, r.text
    try:
        views = r.json()["views"]
        assert all(isinstance(v["consistency"], float) for v in views)
        worst = min(views, key=lambda v: v["consistency"])
        assert worst["index"] == 3  # the coffee photo agrees least with the others
        bad = client.post("/concepts/mixed box/prune", json={"view_ids": [10**6]})
        assert bad.status_code == 422 and set(bad.json()) == {"error", "message"}
        assert client.post("/concepts/mixed box/prune", json={}).status_code == 422
        every = client.post("/concepts/mixed box/prune", json={"view_ids": [v["view_id"] for v in views]})
        assert every.status_code == 422 and "remove the concept" in every.json()["message"]
        pruned = client.post("/concepts/mixed box/prune", json={"view_ids": [worst["view_id"]]}).json()
        assert pruned["removed"] == [worst["view_id"]] and pruned["kept"] == 3
        assert [v["view_id"] for v in pruned["concept"]["views"]] == [v["view_id"] for v in views[:3]]
        assert client.post("/concepts/nobody/prune", json={"outliers": True}).status_code == 404
    finally:
        client.delete("/concepts/mixed box")


def test_library_search_reports_near_misses_below_the_threshold(client: TestClient) -> None:
    state = client.app.state.focuskit  # type: ignore[attr-defined]
    assert client.post("/library/index").status_code == 202
    state.wait_for_indexing(120)
    job = client.get("/library/status").json()["indexing"]
    assert job["state"] == "done" and job["done"] == job["total"] == 4 and job["phase"] == "done"
    strict = client.get("/library/search", params={"concept": "my box", "tau": 0.9}).json()
    assert strict["color"] == "#3cb44b"
    hit_paths = {h["path"] for h in strict["hits"]}
    misses = strict["near_misses"]
    assert misses and all(m["score"] < 0.9 for m in misses) and not hit_paths & {m["path"] for m in misses}
    assert misses[0]["path"] == "box_f0100.jpg"  # the other photo of the box: just below a too-strict threshold
    assert [m["score"] for m in misses] == sorted((m["score"] for m in misses), reverse=True)


def test_indexing_job_reports_counts_rate_and_eta() -> None:
    job = IndexJob(state="running", started_at=100.0)
    assert job.to_json()["phase"] == "preparing" and job.to_json()["eta_s"] is None
    job.total, job.done, job.first_file_at = 80, 1, 110.0
    assert job.to_json()["phase"] == "computing" and job.to_json()["eta_s"] is None  # one file: no rate yet
    import time

    job.done, job.first_file_at = 21, time.time() - 10.0  # 20 files in 10 s after the first
    out = job.to_json()
    assert out["files_per_s"] == pytest.approx(2.0, rel=0.05) and out["eta_s"] == pytest.approx(29.5, rel=0.05)
