"""The HTTP API: every route on real photos, and the guards (traversal, limits, content checks, token, concurrency)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from focuskit.core.box import Box, iou
from focuskit.library import LibraryConfig
from focuskit.server import BackendSettings, ServerSettings, create_app

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
BOX = [296.0, 14.0, 597.0, 242.0]  # the box in box_f0000.jpg
BOX_F0100 = Box(222.0, 20.0, 545.0, 268.0)  # the same box in box_f0100.jpg (episode file ground truth)
PHOTOS = ("box_f0000.jpg", "box_f0100.jpg", "cup_f0010.jpg", "coffee.jpg")
SECRET = b"top secret, outside the library"
FAST_LIBRARY = LibraryConfig()  # SSD + windows: windows alone give loose boxes
LOCAL: dict = {"base_url": "http://127.0.0.1:8000", "headers": {"X-Focuskit": "1"}}
"""A client as a script on this machine talks to the server: its own Host, and the header writes need."""


def _settings(tmp: Path, **kw: object) -> ServerSettings:
    base: dict[str, object] = dict(
        memory_dir=tmp / "memory",
        library_dir=tmp / "library",
        index_on_start=False,
        library=FAST_LIBRARY,
        max_upload_bytes=1_000_000,
        max_files=4,
        max_pixels=2_000_000,
    )
    base.update(kw)
    return ServerSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library of real photos, a secret file beside it and a symlink pointing at that secret."""
    tmp = tmp_path_factory.mktemp("server")
    lib = tmp / "library"
    (lib / "sub").mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        shutil.copy(REAL / name, (lib / "sub" if i == 1 else lib) / name)
    (tmp / "secret.jpg").write_bytes(SECRET)
    (lib / "escape.jpg").symlink_to(tmp / "secret.jpg")
    (lib / "notes.txt").write_text("not a photo")
    return tmp


@pytest.fixture(scope="module")
def client(tree: Path) -> Iterator[TestClient]:
    app = create_app(_settings(tree))
    with TestClient(app, **LOCAL) as c:
        yield c


def _upload(name: str) -> tuple[str, bytes, str]:
    return (name, (REAL / name).read_bytes(), "image/jpeg")


def _png_bytes(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _create(client: TestClient, name: str, **extra: str) -> object:
    data = {"name": name, "boxes": json.dumps([BOX]), **extra}
    return client.post("/concepts", data=data, files=[("images", _upload("box_f0000.jpg"))])


def _error(resp: object, status: int, *words: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)  # type: ignore[attr-defined]
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "message"}
    for w in words:
        assert w in body["message"], body
    return body


def _wait_indexed(client: TestClient) -> dict:
    resp = client.post("/library/index")
    assert resp.status_code == 202, resp.text
    for _ in range(600):
        status = client.get("/library/status").json()
        if status["indexing"]["state"] != "running":
            break
        time.sleep(0.05)
    assert status["indexing"]["state"] == "done", status
    return status


# --- routes --------------------------------------------------------------------------------------------------
def test_page_health_schema_and_offline_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/static/app.js").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["library"] is True and health["backend"] == "none"
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/concepts", "/localize", "/detect", "/ask", "/library/search", "/library/status"):
        assert route in paths
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    _error(client.get("/no/such/route"), 404)


def test_concept_create_list_thumbnail_rename_context_delete(client: TestClient) -> None:
    resp = _create(client, "mug", context="on my desk")
    assert resp.status_code == 201, resp.text
    concept = resp.json()
    assert concept["name"] == "mug" and concept["context"] == "on my desk" and len(concept["views"]) == 1
    assert iou(Box.from_xyxy(concept["views"][0]["box"]), Box.from_xyxy(BOX)) > 0.95

    thumb = client.get(concept["views"][0]["thumbnail"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    assert "mug" in [c["name"] for c in client.get("/concepts").json()["concepts"]]
    _error(_create(client, "mug"), 409, "already exists")

    renamed = client.patch("/concepts/mug", json={"name": "red mug", "context": "the one with a chip"})
    assert renamed.status_code == 200 and renamed.json()["context"] == "the one with a chip"
    _error(client.get("/concepts/mug"), 404, "no concept 'mug'")
    assert client.get("/concepts/red mug").json()["name"] == "red mug"
    _error(client.get("/concepts/red mug/views/7/thumbnail"), 404, "no view 7")
    assert client.delete("/concepts/red mug").json() == {"deleted": "red mug"}
    _error(client.delete("/concepts/red mug"), 404)


def test_concept_from_library_photo_then_index_search_and_downloads(client: TestClient, tree: Path) -> None:
    picks = json.dumps([{"path": "box_f0000.jpg", "frame": None, "box": BOX}])
    resp = client.post("/concepts", data={"name": "box", "library_images": picks})
    assert resp.status_code == 201, resp.text

    status = _wait_indexed(client)
    assert status["index"]["files"] == len(PHOTOS)  # escape.jpg (symlink out) and notes.txt are not indexed
    listed = client.get("/library/items").json()
    assert sorted(i["path"] for i in listed["items"]) == sorted(
        ["box_f0000.jpg", "sub/box_f0100.jpg", "cup_f0010.jpg", "coffee.jpg"]
    )

    result = client.get("/library/search", params={"concept": "box"}).json()
    paths = [h["path"] for h in result["hits"]]
    assert "sub/box_f0100.jpg" in paths and not any(p.startswith(("cup", "coffee")) for p in paths)
    hit = next(h for h in result["hits"] if h["path"] == "sub/box_f0100.jpg")
    assert iou(Box.from_xyxy(hit["boxes"][0]), BOX_F0100) > 0.5
    assert "image" not in hit  # no absolute server paths in responses

    original = client.get(hit["image_url"])
    assert original.status_code == 200 and original.content == (tree / "library" / "sub" / "box_f0100.jpg").read_bytes()
    drawn = client.get(hit["annotated_url"])
    assert drawn.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(drawn.content)).size == (640, 480)
    small = client.get("/library/thumbnail/sub/box_f0100.jpg", params={"size": 64})
    assert max(Image.open(io.BytesIO(small.content)).size) == 64
    _error(client.get("/library/search", params={"concept": "nope"}), 404, "no concept 'nope'")


def test_localize_with_uploaded_supports(client: TestClient) -> None:
    files = [("supports", _upload("box_f0000.jpg")), ("query", _upload("box_f0100.jpg"))]
    resp = client.post("/localize", data={"boxes": json.dumps([BOX]), "engine": "matching"}, files=files)
    assert resp.status_code == 200, resp.text
    pred = resp.json()
    assert pred["box"] is not None and iou(Box.from_xyxy(pred["box"]), BOX_F0100) > 0.5
    _error(client.post("/localize", data={"boxes": "[]"}, files=files), 422, "1 supports and 0 boxes")
    _error(client.post("/localize", data={"boxes": "[1, 2"}, files=files), 422, "boxes must be JSON")
    bad_engine = {"boxes": json.dumps([BOX]), "engine": "magic"}
    _error(client.post("/localize", data=bad_engine, files=files), 422, "engine must be one of")
    outside = {"boxes": json.dumps([[600, 400, 900, 700]])}
    _error(client.post("/localize", data=outside, files=files), 422, "outside")


def test_detect_finds_a_stored_concept(client: TestClient) -> None:
    if client.get("/concepts/box").status_code == 404:
        assert _create(client, "box").status_code == 201
    resp = client.post("/detect", files=[("image", _upload("box_f0100.jpg"))])
    assert resp.status_code == 200, resp.text
    dets = resp.json()["detections"]
    assert [d["concept"] for d in dets] == ["box"]
    assert iou(Box.from_xyxy(dets[0]["box"]), BOX_F0100) > 0.5
    none = client.post("/detect", files=[("image", _upload("coffee.jpg"))]).json()
    assert none["detections"] == []


def test_ask_without_backend_is_a_clear_503(client: TestClient) -> None:
    body = _error(
        client.post("/ask", data={"question": "what is this?"}, files=[("image", _upload("coffee.jpg"))]),
        503,
        "--backend",
    )
    assert body["error"] == "no_backend"


def test_ask_with_unreachable_backend_is_a_clear_502(tree: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = BackendSettings(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2.0)
    app = create_app(_settings(tree / "b502", backend=backend, library_dir=None))
    with TestClient(app, **LOCAL) as c:
        body = _error(c.post("/ask", data={"question": "hi"}, files=[("image", _upload("coffee.jpg"))]), 502)
        assert str(port) in body["message"]


def test_ask_with_the_tiny_local_model_answers(tree: Path) -> None:
    app = create_app(_settings(tree / "ask", backend=BackendSettings(kind="hf", model="tiny"), library_dir=None))
    with TestClient(app, **LOCAL) as c:
        resp = c.post("/ask", data={"question": "What is in the picture?"}, files=[("image", _upload("coffee.jpg"))])
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert isinstance(body["answer"], str) and body["personalized"] is False and body["detections"] == []


# --- path safety ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, status",
    [
        ("/library/image/%2e%2e/secret.jpg", 400),
        ("/library/image/sub/%2e%2e/%2e%2e/secret.jpg", 400),
        ("/library/image/..%2fsecret.jpg", 400),
        ("/library/image/%2Fetc%2Fpasswd", 400),
        ("/library/image/escape.jpg", 403),  # symlink pointing out of the library
        ("/library/thumbnail/escape.jpg", 403),
        ("/library/annotated/%2e%2e/secret.jpg?concept=box", 400),
        ("/library/image/.hidden.jpg", 400),
        ("/library/image/notes.txt", 415),
        ("/library/image/missing.jpg", 404),
        ("/library/image/box_f0000.jpg?frame=3", 422),
    ],
)
def test_request_paths_never_leave_the_library(client: TestClient, url: str, status: int) -> None:
    resp = client.get(url)
    assert SECRET not in resp.content
    _error(resp, status)


@pytest.mark.parametrize(
    "path, status",
    [
        ("../secret.jpg", 400),
        ("sub/../../secret.jpg", 400),
        ("/etc/passwd", 400),
        ("C:/Windows/win.ini", 400),
        ("sub\\..\\..\\secret.jpg", 400),
        ("escape.jpg", 403),
        ("memory/memory.sqlite", 404),
    ],
)
def test_library_picks_in_concept_creation_are_contained(client: TestClient, path: str, status: int) -> None:
    picks = json.dumps([{"path": path, "box": [0, 0, 10, 10]}])
    _error(client.post("/concepts", data={"name": f"probe {status}", "library_images": picks}), status)


def test_protected_dirs_inside_the_library_are_not_served(tree: Path) -> None:
    lib = tree / "inner"
    lib.mkdir()
    shutil.copy(REAL / "coffee.jpg", lib / "coffee.jpg")
    app = create_app(_settings(tree, library_dir=lib, memory_dir=lib / "mem", state_dir=lib / "state"))
    with TestClient(app, **LOCAL) as c:
        picks = json.dumps([{"path": "coffee.jpg", "box": [0, 0, 200, 200]}])
        assert c.post("/concepts", data={"name": "cup", "library_images": picks}).status_code == 201
        (lib / "mem" / "view.jpg").write_bytes((REAL / "coffee.jpg").read_bytes())
        _error(c.get("/library/image/mem/view.jpg"), 403)


# --- uploads -------------------------------------------------------------------------------------------------
def test_upload_limits_and_checks(client: TestClient) -> None:
    big = ("big.jpg", b"\xff\xd8" + b"0" * 1_100_000, "image/jpeg")
    _error(client.post("/detect", files=[("image", big)]), 413, "over the upload limit")
    _error(
        client.post("/detect", files=[("image", ("a.txt", b"hello", "text/plain"))]), 415, "content type 'text/plain'"
    )
    _error(
        client.post("/detect", files=[("image", ("a.png", b"\x89PNG garbage", "image/png"))]),
        422,
        "not a decodable image",
    )
    huge = ("huge.png", _png_bytes((2000, 1500)), "image/png")  # 3 MP, a few kB: over the pixel limit
    _error(client.post("/detect", files=[("image", huge)]), 413, "3,000,000 pixels")
    _error(client.post("/detect", files=[("image", ("e.jpg", b"", "image/jpeg"))]), 422, "empty")
    many = [("images", _upload("coffee.jpg"))] * 5
    _error(client.post("/concepts", data={"name": "x", "boxes": json.dumps([BOX] * 5)}, files=many), 413, "limit is 4")


def test_whole_request_body_limit_is_enforced_before_parsing(client: TestClient) -> None:
    limit = 1_000_000 * 4 + 1_000_000
    body = b"x" * (limit + 10)
    resp = client.post("/detect", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    _error(resp, 413, "request body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(6):
            yield b"y" * 1_000_000

    resp = client.post("/detect", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    _error(resp, 413, "request body")


# --- token ---------------------------------------------------------------------------------------------------
def test_token_is_required_on_the_api_when_set(tree: Path) -> None:
    app = create_app(_settings(tree / "tok", token="s3cret-token", library_dir=None))
    with TestClient(app, **LOCAL) as c:
        assert c.get("/").status_code == 200  # the page itself holds no data; it asks for the token
        body = _error(c.get("/health"), 401, "Authorization: Bearer")
        assert body["error"] == "unauthorized"
        _error(c.get("/concepts", headers={"Authorization": "Bearer wrong-token"}), 401, "wrong token")
        assert c.get("/concepts", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_non_loopback_host_needs_a_token(tmp_path: Path) -> None:
    from focuskit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="without a token"):
        ServerSettings(memory_dir=tmp_path, host="0.0.0.0")
    assert ServerSettings(memory_dir=tmp_path, host="0.0.0.0", token="long-enough-token").token


# --- concurrency ---------------------------------------------------------------------------------------------
def test_concurrent_concept_creation_is_serialized_and_atomic(tree: Path) -> None:
    app = create_app(_settings(tree / "conc", library_dir=None))
    results: list[int] = []
    with TestClient(app, **LOCAL) as c:

        def create(name: str) -> None:
            results.append(_create(c, name).status_code)

        threads = [threading.Thread(target=create, args=(n,)) for n in ["dup", "dup", "dup", "a", "b"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [201, 201, 201, 409, 409]
        concepts = {c_["name"]: c_ for c_ in c.get("/concepts").json()["concepts"]}
        assert sorted(concepts) == ["a", "b", "dup"]
        assert all(len(c_["views"]) == 1 and c_["vectors"] > 0 for c_ in concepts.values())


def test_concurrent_inference_requests_all_succeed(client: TestClient) -> None:
    """Detection and localization share models across server threads (the SSD proposer's OpenCV net included)."""
    if client.get("/concepts/box").status_code == 404:
        assert _create(client, "box").status_code == 201
    statuses: list[int] = []

    def call(i: int) -> None:
        if i % 2:
            r = client.post("/detect", files=[("image", _upload(PHOTOS[i % len(PHOTOS)]))])
        else:
            r = client.post("/localize", data={"concept": "box"}, files=[("query", _upload("box_f0100.jpg"))])
        statuses.append(r.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
