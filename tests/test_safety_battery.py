"""The safety battery (issue 10): hostile or broken input at the CLI and the HTTP API, one table row each.

Every row expects either success or a named, one-line error, and checks that nothing saved changed:
* CLI rows run `focuskit ...` in-process in a fresh folder and expect exit code 2, a single stderr line
  `focuskit: error: ...` containing the expected words, no traceback, and the folder's files unchanged;
* API rows send one request to a server that holds a concept 'victim' and expect the status, the JSON error shape
  with the expected code, and the concept list (and library status) unchanged.
Slow clients against the real server are in tests/test_server_runner.py; the cross-site form in Chromium is in
tests/test_web_browser.py.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.main import app as cli_app
from focuskit.server import ServerSettings, create_app

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
BOX = [296, 14, 597, 242]  # the box in box_f0000.jpg (640x480)


# --- CLI ------------------------------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb, refused before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _episode(**over: Any) -> str:
    record = {"id": "ep-7", "supports": [{"image": "s.png", "box": [2, 2, 20, 20]}], "query": {"image": "q.png"}}
    record.update(over)
    return json.dumps(record)


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def _images(tmp: Path) -> None:
    Image.new("RGB", (64, 48), (120, 30, 30)).save(tmp / "s.png")
    Image.new("RGB", (64, 48), (30, 120, 30)).save(tmp / "q.png")
    (tmp / "afile").write_text("not a folder")


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


def _busy_port(tmp: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    _OPEN.append(sock)
    (tmp / "port").write_text(str(sock.getsockname()[1]))


_OPEN: list[socket.socket] = []
EVAL = ["eval", "--episodes"]
NESTED = "[" * 100_000 + "]" * 100_000
LOC = ["localize", "--query", "{tmp}/q.png", "--support", "{tmp}/s.png", "--box", "2,2,20,20"]
CLI_CASES: list[tuple[str, list[str], Callable[[Path], None] | None, str]] = [
    # id, argv ({tmp} is the row's folder), setup, words the one line must contain
    ("jsonl-latin1", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", _episode().encode() + b"\n{\"id\": \"caf\xe9\"}\n"),
     "e.jsonl:2: not UTF-8"),
    ("jsonl-binary", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", b"\xff\xfe\x00\x01garbage"), "not UTF-8"),
    ("jsonl-5000-digits", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", '{"id": ' + "9" * 5000 + "}\n"),
     "e.jsonl:1: unreadable JSON value"),
    ("jsonl-deep-nesting", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", NESTED + "\n"), "nested too deeply"),
    ("jsonl-not-json", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", "{not json\n"), "e.jsonl:1: not valid JSON"),
    ("jsonl-list-line", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", "[5, 6]\n"), "expected a JSON object"),
    ("jsonl-no-query", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", '{"id": "x", "supports": []}\n'),
     "(episode 'x'): missing key 'query'"),
    ("jsonl-box-3", [*EVAL, "{tmp}/e.jsonl"],
     _write("e.jsonl", _episode(supports=[{"image": "s.png", "box": [1, 2, 3]}])), "'box' must be [x1, y1, x2, y2]"),
    ("jsonl-box-zero-area", [*EVAL, "{tmp}/e.jsonl"],
     _write("e.jsonl", _episode(supports=[{"image": "s.png", "box": [5, 5, 5, 9]}])), "episode 'ep-7'"),
    ("jsonl-box-huge-int", [*EVAL, "{tmp}/e.jsonl"],
     _write("e.jsonl", _episode(supports=[{"image": "s.png", "box": [0, 0, 1, int("9" * 400)]}])), "too large"),
    ("jsonl-box-text", [*EVAL, "{tmp}/e.jsonl"],
     _write("e.jsonl", _episode(supports=[{"image": "s.png", "box": ["a", 0, 1, 1]}])), "episode 'ep-7'"),
    ("jsonl-empty", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", "\n\n"), "contains no episodes"),
    ("jsonl-support-not-object", [*EVAL, "{tmp}/e.jsonl"], _write("e.jsonl", _episode(supports=[5])),
     "support 1: expected"),
    ("iploc-list-of-ints", [*EVAL, "{tmp}/e.json"], _write("e.json", "[5, 6]"), "IPLoc entries are objects"),
    ("iploc-latin1", [*EVAL, "{tmp}/e.json"], _write("e.json", b'[{"element": "caf\xe9"}]'), "not UTF-8"),
    ("iploc-bad-bbox", [*EVAL, "{tmp}/e.json"],
     _write("e.json", json.dumps([{"image_path": ["a.png", "b.png"], "bbox": ["[1, 2", "[1, 2, 3, 4]"]}])),
     "not a list of four numbers"),
    ("iploc-deep-bbox", [*EVAL, "{tmp}/e.json"],
     _write("e.json", json.dumps([{"image_path": ["a.png", "b.png"], "bbox": ["[" * 5000, "[1, 2, 3, 4]"]}])),
     "not a list of four numbers"),
    ("iploc-empty", [*EVAL, "{tmp}/e.json"], _write("e.json", "[]"), "non-empty JSON list"),
    ("iploc-one-image", [*EVAL, "{tmp}/e.json"],
     _write("e.json", json.dumps([{"image_path": "a.png", "bbox": [1, 1, 5, 5]}])), "at least one support"),
    ("iploc-missing-keys", [*EVAL, "{tmp}/e.json"], _write("e.json", '[{"element": "cup"}]'), "need 'image_path'"),
    ("iploc-list-of-lists-of-ints", [*EVAL, "{tmp}/e.json"], _write("e.json", "[[5], [6]]"), "episode 0"),
    ("episodes-missing", [*EVAL, "{tmp}/nope.jsonl"], None, "episode file not found"),
    ("episodes-empty-folder", [*EVAL, "{tmp}/d"], _write("d/readme.txt", "x"), "no IPLoc"),
    ("eval-out-folder", [*EVAL, "{tmp}/e.jsonl", "--out", "{tmp}"], _write("e.jsonl", _episode()), "is a folder"),
    ("eval-out-under-file", [*EVAL, "{tmp}/e.jsonl", "--out", "{tmp}/afile/x.json"],
     _both(_images, _write("e.jsonl", _episode())), "is a file, not a folder"),
    ("eval-out-unwritable", [*EVAL, "{tmp}/e.jsonl", "--out", "/proc/focuskit-x.json"],
     _write("e.jsonl", _episode()), "--out /proc/focuskit-x.json"),
    ("eval-missing-support-image", [*EVAL, "{tmp}/e.jsonl"],
     _both(_images, _write("e.jsonl", _episode(supports=[{"image": "gone.png", "box": [2, 2, 20, 20]}]))),
     "e.jsonl:1 (episode 'ep-7'), k=1:"),
    ("eval-box-outside-image", [*EVAL, "{tmp}/e.jsonl"],
     _both(_images, _write("e.jsonl", _episode(supports=[{"image": "s.png", "box": [2, 2, 200, 20]}]))),
     "e.jsonl:1 (episode 'ep-7'), k=1:"),
    ("eval-shots-0", [*EVAL, "{tmp}/e.jsonl", "--shots", "0"], _write("e.jsonl", _episode()), "shots must be >= 1"),
    ("eval-limit-0", [*EVAL, "{tmp}/e.jsonl", "--limit", "0"], _write("e.jsonl", _episode()), "--limit"),
    ("usage-unknown-option", ["localize", "--frobnicate"], None, "No such option: --frobnicate"),
    ("usage-tau-not-a-number", [*LOC, "--tau", "abc"], _images, "Invalid value for '--tau'"),
    ("usage-missing-query", ["localize", "--support", "x.png"], None, "Missing option '--query'"),
    ("usage-unknown-command", ["frobnicate"], None, "No such command 'frobnicate'"),
    ("usage-concept-missing-arg", ["concept", "add"], None, "Missing argument"),
    ("library-search-tau-5", ["library", "search", "cup", "--memory", "{tmp}/m", "--tau", "5"], None,
     "less than or equal to 1"),
    ("localize-no-supports", ["localize", "--query", "{tmp}/q.png"], _images, "no supports given"),
    ("localize-bad-box", [*LOC[:-1], "1,2,3"], _images, "x1,y1,x2,y2"),
    ("localize-draw-under-file", [*LOC, "--draw", "{tmp}/afile/d.png"], _images, "is a file, not a folder"),
    ("localize-draw-bad-format", [*LOC, "--draw", "{tmp}/d.xyz"], _images, "d.xyz"),
    ("localize-query-not-image", ["localize", "--query", "{tmp}/afile", "--support", "{tmp}/s.png", "--box",
                                  "2,2,20,20"], _images, "afile"),
    ("localize-query-bomb", ["localize", "--query", "{tmp}/bomb.png", "--support", "{tmp}/s.png", "--box",
                             "2,2,20,20"], _both(_images, _write("bomb.png", _png_header(100_000, 100_000))),
     "bomb.png"),
    ("name-slash", ["concept", "add", "a/b", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "may not contain '/'"),
    ("name-backslash", ["concept", "add", "a\\b", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "may not contain '\\'"),
    ("name-dot", ["concept", "add", ".", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "may not be '.'"),
    ("name-dotdot", ["concept", "add", "..", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "may not be '..'"),
    ("name-newline", ["concept", "add", "a\nb", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "control characters"),
    ("name-tab", ["concept", "add", "a\tb", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "control characters"),
    ("name-empty", ["concept", "add", "  ", "{tmp}/s.png", "-m", "{tmp}/m"], _images, "non-empty"),
    ("name-too-long", ["concept", "add", "x" * 201, "{tmp}/s.png", "-m", "{tmp}/m"], _images, "at most 200"),
    ("rename-to-slash", ["concept", "rename", "a", "b/c", "-m", "{tmp}/m"], None, "may not contain '/'"),
    ("concept-add-show-is-file", ["concept", "add", "cup", "{tmp}/s.png", "-m", "{tmp}/m", "--show", "{tmp}/afile"],
     _images, "is a file: give a folder"),
    ("concept-add-show-under-file", ["concept", "add", "cup", "{tmp}/s.png", "-m", "{tmp}/m", "--show",
                                     "{tmp}/afile/v"], _images, "is a file, not a folder"),
    ("concept-add-box-count", ["concept", "add", "cup", "{tmp}/s.png", "-m", "{tmp}/m", "--box", "1,1,5,5", "--box",
                               "1,1,5,5"], _images, "one --box per image"),
    ("concept-show-out-is-file", ["concept", "show", "cup", "-m", "{tmp}/m", "--out", "{tmp}/afile"], _images,
     "is a file: give a folder"),
    ("detect-draw-under-file", ["detect", "{tmp}/q.png", "-m", "{tmp}/m", "--draw", "{tmp}/afile/d.png"], _images,
     "is a file, not a folder"),
    ("serve-port-busy", ["serve", "-m", "{tmp}/m", "--port", "{port}", "--no-index"], _busy_port, "already in use"),
    ("serve-port-out-of-range", ["serve", "-m", "{tmp}/m", "--port", "70000", "--no-index"], None, "port must be"),
    ("serve-public-without-token", ["serve", "-m", "{tmp}/m", "--host", "0.0.0.0", "--no-index"], None,
     "without a token"),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def cli() -> Iterator[CliRunner]:
    yield CliRunner()
    while _OPEN:
        _OPEN.pop().close()


@pytest.mark.parametrize(("argv", "setup", "words"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_with_one_line(
    cli: CliRunner, tmp_path: Path, argv: list[str], setup: Callable[[Path], None] | None, words: str
) -> None:
    if setup is not None:
        setup(tmp_path)
    port = (tmp_path / "port").read_text() if (tmp_path / "port").exists() else "0"
    before = _snapshot(tmp_path)
    result = cli.invoke(cli_app, [a.replace("{tmp}", str(tmp_path)).replace("{port}", port) for a in argv])
    err = result.stderr
    lines = [line for line in err.splitlines() if line.startswith("focuskit: error:")]
    assert result.exit_code == 2, (result.exit_code, err, result.output, result.exception)
    assert "Traceback" not in err + result.output
    assert len(lines) == 1 and words in lines[0], err
    assert _snapshot(tmp_path) == before, "a refused command changed files"


def test_the_battery_has_at_least_60_rows() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 60


# --- HTTP API -------------------------------------------------------------------------------------------------
def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


HERE = "http://127.0.0.1:8000"
EVIL = "http://evil.example"
FORM = {"name": "probe", "boxes": json.dumps([[2, 2, 40, 40]])}


def _upload(data: bytes, ctype: str = "image/jpeg", name: str = "x.jpg") -> dict[str, Any]:
    return {"files": [("images", (name, data, ctype))]}


def _create(name: str, **headers: str) -> dict[str, Any]:
    return {"data": {**FORM, "name": name}, **_upload(_jpeg()), "headers": headers}


API_CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # id, method, url, request keyword arguments, status, error code
    ("origin-foreign-create", "POST", "/concepts", _create("victim", Origin=EVIL), 403, "cross_origin"),
    ("origin-foreign-replace", "POST", "/concepts",
     {**_create("victim", Origin=EVIL), "data": {**FORM, "name": "victim", "replace": "true"}}, 403, "cross_origin"),
    ("origin-null", "POST", "/concepts", _create("probe", Origin="null"), 403, "cross_origin"),
    ("origin-other-port", "POST", "/concepts", _create("probe", Origin="http://127.0.0.1:9999"), 403,
     "cross_origin"),
    ("origin-other-scheme-host", "POST", "/concepts", _create("probe", Origin="https://localhost.evil.example"), 403,
     "cross_origin"),
    ("referer-foreign", "POST", "/concepts", _create("probe", Referer=f"{EVIL}/page.html"), 403, "cross_origin"),
    ("no-origin-no-header", "POST", "/concepts", {**_create("probe"), "headers": {"X-Focuskit": ""}}, 403,
     "missing_header"),
    ("no-origin-wrong-header", "POST", "/concepts", {**_create("probe"), "headers": {"X-Focuskit": "yes"}}, 403,
     "missing_header"),
    ("delete-foreign", "DELETE", "/concepts/victim", {"headers": {"Origin": EVIL}}, 403, "cross_origin"),
    ("patch-foreign", "PATCH", "/concepts/victim", {"json": {"name": "mine"}, "headers": {"Origin": EVIL}}, 403,
     "cross_origin"),
    ("reindex-foreign", "POST", "/library/index?reindex=true", {"headers": {"Origin": EVIL}}, 403, "cross_origin"),
    ("detect-foreign", "POST", "/detect", {**_upload(_jpeg()), "headers": {"Origin": EVIL}}, 403, "cross_origin"),
    ("host-foreign-list", "GET", "/concepts", {"headers": {"Host": "evil.example"}}, 421, "unknown_host"),
    ("host-foreign-photo", "GET", "/library/image/box_f0000.jpg", {"headers": {"Host": "evil.example:8000"}}, 421,
     "unknown_host"),
    ("host-foreign-write", "POST", "/concepts", {**_create("probe"), "headers": {"Host": "evil.example"}}, 421,
     "unknown_host"),
    ("host-suffix-trick", "GET", "/concepts", {"headers": {"Host": "127.0.0.1.evil.example"}}, 421, "unknown_host"),
    ("host-empty", "GET", "/concepts", {"headers": {"Host": ""}}, 421, "unknown_host"),
    ("name-slash", "POST", "/concepts", _create("a/b"), 422, "invalid_name"),
    ("name-backslash", "POST", "/concepts", _create("a\\b"), 422, "invalid_name"),
    ("name-dot", "POST", "/concepts", _create("."), 422, "invalid_name"),
    ("name-dotdot", "POST", "/concepts", _create(".."), 422, "invalid_name"),
    ("name-control", "POST", "/concepts", _create("a\x01b"), 422, "invalid_name"),
    ("name-too-long", "POST", "/concepts", _create("x" * 201), 422, "invalid_name"),
    ("rename-to-slash", "PATCH", "/concepts/victim", {"json": {"name": "a/b"}}, 422, "invalid_name"),
    ("rename-to-dotdot", "PATCH", "/concepts/victim", {"json": {"name": ".."}}, 422, "invalid_name"),
    ("exists-without-replace", "POST", "/concepts", _create("victim"), 409, "concept_exists"),
    ("upload-bomb-header", "POST", "/concepts", {"data": FORM, **_upload(_png_header(100_000, 100_000), "image/png")},
     413, "image_too_large"),
    ("upload-over-pixel-limit", "POST", "/concepts", {"data": FORM, **_upload(_png((2000, 1500)), "image/png")},
     413, "image_too_large"),
    ("upload-truncated-jpeg", "POST", "/concepts", {"data": FORM, **_upload(_jpeg()[:200])}, 422, "bad_image"),
    ("upload-not-an-image", "POST", "/concepts", {"data": FORM, **_upload(b"hello" * 50)}, 422, "bad_image"),
    ("upload-text-type", "POST", "/concepts", {"data": FORM, **_upload(b"hello", "text/plain")}, 415,
     "unsupported_media_type"),
    ("upload-too-many-bytes", "POST", "/concepts", {"data": FORM, **_upload(b"\xff" * 300_001)}, 413,
     "upload_too_large"),
    ("upload-too-many-files", "POST", "/concepts",
     {"data": {**FORM, "boxes": json.dumps([None] * 5)}, "files": [("images", ("x.jpg", _jpeg(), "image/jpeg"))] * 5},
     413, "too_many_files"),
    ("boxes-not-json", "POST", "/concepts", {"data": {**FORM, "boxes": "[1,"}, **_upload(_jpeg())}, 422,
     "invalid_request"),
    ("box-outside-image", "POST", "/concepts",
     {"data": {**FORM, "boxes": json.dumps([[2, 2, 400, 40]])}, **_upload(_jpeg())}, 422, "invalid_input"),
    ("box-zero-area", "POST", "/concepts",
     {"data": {**FORM, "boxes": json.dumps([[2, 2, 2, 40]])}, **_upload(_jpeg())}, 422, "invalid_input"),
    ("box-count-mismatch", "POST", "/concepts", {"data": {**FORM, "boxes": "[]"}, **_upload(_jpeg())}, 422,
     "invalid_request"),
    ("pick-traversal", "POST", "/concepts",
     {"data": {"name": "probe", "library_images": json.dumps([{"path": "../secret.jpg", "box": None}])}}, 400,
     "invalid_path"),
    ("path-traversal", "GET", "/library/image/%2e%2e/secret.jpg", {}, 400, "invalid_path"),
    ("path-absolute", "GET", "/library/image/%2Fetc%2Fpasswd", {}, 400, "invalid_path"),
    ("body-over-cap", "POST", "/detect",
     {"content": b"x" * 3_000_000, "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 413,
     "request_too_large"),
    ("delete-unknown", "DELETE", "/concepts/nobody", {}, 404, "not_found"),
    # issues 14 and 16: auto-boxes before saving, several instances, masks
    ("autobox-foreign", "POST", "/autobox", {**_upload(_jpeg()), "data": {"boxes": "[null]"},
     "headers": {"Origin": EVIL}}, 403, "cross_origin"),
    ("autobox-no-views", "POST", "/autobox", {"data": {"boxes": "[]"}}, 422, "invalid_request"),
    ("autobox-box-outside", "POST", "/autobox", {"data": {"boxes": json.dumps([[2, 2, 400, 40]])},
     **_upload(_jpeg())}, 422, "invalid_input"),
    ("autobox-box-count", "POST", "/autobox", {"data": {"boxes": "[null, null]"}, **_upload(_jpeg())}, 422,
     "invalid_request"),
    ("autobox-pick-traversal", "POST", "/autobox",
     {"data": {"library_images": json.dumps([{"path": "../secret.jpg", "box": None}])}}, 400, "invalid_path"),
    ("autobox-not-an-image", "POST", "/autobox", {"data": {"boxes": "[null]"}, **_upload(b"hello" * 50)}, 422,
     "bad_image"),
    ("create-segment-exists", "POST", "/concepts",
     {**_create("victim"), "data": {**FORM, "name": "victim", "segment": "true"}}, 409, "concept_exists"),
    ("detect-max-instances-0", "POST", "/detect",
     {"files": [("image", ("x.jpg", _jpeg(), "image/jpeg"))], "data": {"max_instances": "0"}}, 422,
     "invalid_request"),
    ("detect-max-instances-text", "POST", "/detect",
     {"files": [("image", ("x.jpg", _jpeg(), "image/jpeg"))], "data": {"max_instances": "all"}}, 422,
     "invalid_request"),
    ("localize-max-instances-over-limit", "POST", "/localize",
     {"files": [("query", ("x.jpg", _jpeg(), "image/jpeg"))], "data": {"concept": "victim", "max_instances": "21"}},
     422, "invalid_request"),
    ("localize-segment-not-bool", "POST", "/localize",
     {"files": [("query", ("x.jpg", _jpeg(), "image/jpeg"))], "data": {"concept": "victim", "segment": "maybe"}},
     422, "invalid_request"),
    ("prune-foreign", "POST", "/concepts/victim/prune", {"json": {"outliers": True}, "headers": {"Origin": EVIL}},
     403, "cross_origin"),
    ("prune-unknown-concept", "POST", "/concepts/nobody/prune", {"json": {"outliers": True}}, 404, "not_found"),
    ("prune-nothing-asked", "POST", "/concepts/victim/prune", {"json": {}}, 422, "invalid_request"),
    ("prune-unknown-view", "POST", "/concepts/victim/prune", {"json": {"view_ids": [999999]}}, 422, "invalid_input"),
    ("prune-ids-not-a-list", "POST", "/concepts/victim/prune", {"json": {"view_ids": "all"}}, 422, "invalid_request"),
    ("ask-blank-question", "POST", "/ask",
     {"files": [("image", ("x.jpg", _jpeg(), "image/jpeg"))], "data": {"question": "   "}}, 422, "invalid_request"),
]  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("battery")
    (tmp / "library").mkdir()
    shutil.copy(REAL / "box_f0000.jpg", tmp / "library" / "box_f0000.jpg")
    (tmp / "secret.jpg").write_bytes(b"secret")
    settings = ServerSettings(
        memory_dir=tmp / "memory",
        library_dir=tmp / "library",
        index_on_start=False,
        max_upload_bytes=300_000,
        max_files=4,
        max_pixels=2_000_000,
    )
    with TestClient(create_app(settings), base_url=HERE, headers={"X-Focuskit": "1"}) as client:
        photo = (REAL / "box_f0000.jpg").read_bytes()
        made = client.post(
            "/concepts",
            data={"name": "victim", "boxes": json.dumps([BOX])},
            files=[("images", ("box.jpg", photo, "image/jpeg"))],
        )
        assert made.status_code == 201, made.text
        yield client


def _state(client: TestClient) -> Any:
    return client.get("/concepts").json(), client.get("/library/status").json()


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "code"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_refuses_and_changes_nothing(
    api: TestClient, method: str, url: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = _state(api)
    headers = {"X-Focuskit": "1", **kwargs.get("headers", {})}
    resp = api.request(method, url, **{**kwargs, "headers": headers})
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert "\n" not in body["message"] and "Traceback" not in body["message"]
    assert _state(api) == before, "a refused request changed what is saved"


@pytest.mark.parametrize(
    "headers",
    [{"Origin": HERE}, {"Referer": f"{HERE}/"}, {"X-Focuskit": "1"}, {"Origin": "http://localhost:8000",
                                                                     "Host": "localhost:8000"}],
    ids=["own-origin", "own-referer", "script-with-header", "localhost-name"],
)  # fmt: skip
def test_writes_from_the_page_or_a_script_are_accepted(api: TestClient, headers: dict[str, str]) -> None:
    name = f"ok {sorted(headers)[0]} {headers.get('Host', '')}".strip()
    request = _create(name)
    request["headers"] = {"X-Focuskit": "", **headers}  # only what the row names vouches for the write
    resp = api.post("/concepts", **request)
    assert resp.status_code == 201, resp.text
    assert api.delete(f"/concepts/{name}", headers={"Origin": HERE}).status_code == 200


def test_allowed_origin_and_host_flags(tmp_path: Path) -> None:
    settings = ServerSettings(
        memory_dir=tmp_path / "m", index_on_start=False, allow_hosts=["photos.lan"], allow_origins=["https://ui.lan"]
    )
    with TestClient(create_app(settings), base_url="http://photos.lan:8000") as client:
        assert client.get("/concepts").status_code == 200
        resp = client.post("/concepts", **_create("cup", Origin="https://ui.lan"))
        assert resp.status_code == 201, resp.text
        assert client.delete("/concepts/cup", headers={"Origin": EVIL}).status_code == 403
