"""End to end in headless Chromium: the real `focuskit serve` process (with the tiny test VLM for /ask), a user
drawing a box with the mouse on a library photo, creating a concept, finding it in the library gallery with its
boxes drawn; the Ask tab showing the prompt and the prompted image the model got, its boxes in the colors the prompt
names; Localize against a saved concept with masks; indexing progress; messages that go when their cause does."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from focuskit.viz.draw import COLOR_NAMES, PALETTE

CHROMIUM = Path("/usr/bin/chromium")
REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
LIBRARY = (
    "box_f0000.jpg",
    "box_f0100.jpg",
    "box_f0230.jpg",
    "box_f0390.jpg",
    "cup_f0010.jpg",
    "cup_f0080.jpg",
    "coffee.jpg",
    "astronaut.jpg",
    "chess_left01.jpg",
    "moto_left.jpg",
)
BOX = (296.0, 14.0, 597.0, 242.0)  # the box in box_f0000.jpg (640x480)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian chromium at /usr/bin/chromium (apt-get install -y chromium); CI installs it",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`focuskit serve` in a subprocess on a free loopback port, answering /ask with the tiny random test VLM;
    yields its URL once the index is built. Shared by the tests here, which use distinct concept names."""
    tmp_path = tmp_path_factory.mktemp("web")
    lib = tmp_path / "photos"
    lib.mkdir()
    for name in LIBRARY:
        shutil.copy(REAL / name, lib / name)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "focuskit.cli.main",
        "serve",
        "--memory",
        str(tmp_path / "memory"),
        "--library",
        str(lib),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend",
        "hf",
        "--model",
        "tiny",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FOCUSKIT_TOKEN": ""}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {(tmp_path / 'server.log').read_text()}")
            try:
                status = httpx.get(f"{url}/library/status", timeout=2).json()
                if status["indexing"]["state"] in ("done", "failed"):
                    assert status["indexing"]["state"] == "done", status
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 60 s: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.2)
        assert f"serving on {url}/" in (tmp_path / "server.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open_page(pw: Any, server: str) -> tuple[Any, Any, list[str]]:
    """Chromium on the page, once it says it is ready; `errors` collects the page's uncaught JavaScript errors."""
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready='1']")
    return browser, page, errors


def test_draw_a_box_create_a_concept_and_find_it_in_the_library(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        browser, page, errors = _open_page(pw, server)

        # Teach: pick a library photo and drag a box around the object with the mouse.
        page.click("#pick-library")
        page.click("#library-picker img[data-path='box_f0000.jpg']")
        # The page finds the object itself first (a dashed auto box, editable); the user redraws it.
        page.wait_for_selector("#views .card.view[data-how='auto'], #views .card.view[data-how='none']")
        canvas = page.wait_for_selector("#views .card.view canvas")
        rect = canvas.bounding_box()
        assert rect is not None
        scale = rect["width"] / 640
        x1, y1, x2, y2 = (v * scale for v in BOX)
        page.mouse.move(rect["x"] + x1, rect["y"] + y1)
        page.mouse.down()
        for t in (0.25, 0.5, 0.75, 1.0):
            page.mouse.move(rect["x"] + x1 + t * (x2 - x1), rect["y"] + y1 + t * (y2 - y1))
        page.mouse.up()
        caption = page.inner_text("#views .card.view")
        drawn = [float(v) for v in caption.split("box ")[1].split()[0:4] for v in [v.strip(",")]]
        assert all(abs(a - b) <= 3 / scale for a, b in zip(drawn, BOX, strict=True)), caption

        # The shared name rule (focuskit/core/names.py) holds on the page too.
        page.fill("#concept-name", "my/box")
        page.click("#create-concept")
        page.wait_for_function("document.querySelector('#status').textContent.includes(\"may not contain '/'\")")
        page.fill("#concept-name", "my box")
        assert page.inner_text("#status") == ""  # the name is fixed: its error is gone before anything is sent
        page.fill("#concept-context", "the printed box on my desk")
        page.click("#create-concept")
        page.wait_for_selector(".concept[data-name='my box'] img")
        assert "created" in page.inner_text("#status")

        # Search: the concept's own card button runs the search; the gallery shows hits with boxes drawn.
        page.click(".concept[data-name='my box'] >> text=Find in library")
        page.wait_for_selector("#gallery .card.hit[data-ready='1']")
        page.wait_for_function(
            "document.querySelectorAll('#gallery .card.hit').length === "
            "document.querySelectorAll('#gallery .card.hit[data-ready=\"1\"]').length"
        )
        found = page.eval_on_selector_all("#gallery .card.hit", "cards => cards.map(c => c.dataset.path)")
        assert {"box_f0100.jpg", "box_f0230.jpg"} <= set(found), found
        assert not any(p.startswith(("cup", "coffee", "astronaut")) for p in found), found

        # The box outline is drawn on the hit's canvas in the first palette color (#e6194b), a magenta-red that
        # appears nowhere in these photos (a yellow box, a white table, skin).
        red_pixels = page.eval_on_selector(
            "#gallery .card.hit[data-path='box_f0100.jpg'] canvas",
            """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                     for (let i = 0; i < d.length; i += 4)
                       if (d[i] > 200 && d[i + 1] < 60 && d[i + 2] > 50 && d[i + 2] < 110) n++;
                     return n; }""",
        )
        assert red_pixels > 100
        page.screenshot(path=str(tmp_path / "gallery.png"))
        assert errors == []

        # A page on another origin tries the cross-site writes of issue 10 (a no-cors multipart POST replacing the
        # concept with a 1x1 view, a plain HTML form POST, a reindex); the server refuses them and nothing changes.
        before = httpx.get(f"{server}/concepts").json()
        evil_origin = f"http://127.0.0.1:{_free_port()}"
        evil = browser.new_page()
        evil.route(f"{evil_origin}/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                    body=_evil_page(server)))  # fmt: skip
        evil.goto(f"{evil_origin}/evil.html")
        evil.wait_for_function("window.done === true", timeout=20_000)
        assert httpx.get(f"{server}/concepts").json() == before
        mine = [c for c in before["concepts"] if c["name"] == "my box"]
        assert len(mine) == 1 and len(mine[0]["views"]) == 1
        browser.close()
    httpx.delete(f"{server}/concepts/my box", headers=HEADERS)


HEADERS = {"X-Focuskit": "1"}
CUP = [308.0, 122.0, 413.0, 381.0]  # the cup in cup_f0010.jpg (episodes.jsonl)


def _create(server: str, name: str, photo: str, box: list[float], **extra: str) -> dict:
    files = [("images", (photo, (REAL / photo).read_bytes(), "image/jpeg"))]
    resp = httpx.post(
        f"{server}/concepts", data={"name": name, "boxes": f"[{box}]", **extra}, files=files, headers=HEADERS,
        timeout=60,
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    return resp.json()


def _pixels_near(page, selector: str, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of the canvas at `selector` within `tol` of `rgb` on every channel."""
    return page.eval_on_selector(
        selector,
        """(c, [r, g, b, tol]) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
             for (let i = 0; i < d.length; i += 4)
               if (Math.abs(d[i] - r) <= tol && Math.abs(d[i + 1] - g) <= tol && Math.abs(d[i + 2] - b) <= tol) n++;
             return n; }""",
        [*rgb, tol],
    )


def test_ask_shows_the_prompt_and_image_the_model_got_in_the_colors_it_names(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    # Two concepts, the cup first: "the box" gets a later palette slot, so a page coloring by detection index (the
    # first box red) would contradict the prompt.
    assert httpx.get(f"{server}/concepts").json()["concepts"] == []  # the other tests remove theirs
    cup = _create(server, "the cup", "cup_f0010.jpg", CUP)
    box = _create(server, "the box", "box_f0000.jpg", list(BOX))
    assert box["color"] != cup["color"] and box["color_slot"] != 0
    try:
        with sync_api.sync_playwright() as pw:
            browser, page, errors = _open_page(pw, server)
            assert page.is_visible("#test-model-notice")  # the tiny random model answers here: the page says so

            page.click(".tab[data-tab='ask']")
            # An error on Ask (a blank question) is shown there, and gone once the user is on another tab.
            page.set_input_files("#ask-file", str(REAL / "box_f0100.jpg"))
            page.fill("#ask-question", "   ")
            page.click("#ask-button")
            page.wait_for_function("document.querySelector('#status').textContent.includes('question is empty')")
            page.click(".tab[data-tab='search']")
            assert page.inner_text("#status") == ""
            page.click(".tab[data-tab='ask']")

            page.fill("#ask-question", "What is on the table?")
            with page.expect_response(lambda r: r.url.endswith("/ask")) as answer:
                page.click("#ask-button")
                page.wait_for_selector("#ask-button.busy:disabled", timeout=5000)  # spinning while the model runs
            body = answer.value.json()
            page.wait_for_selector("#ask-button:not(.busy):enabled")
            page.wait_for_selector("#ask-work[data-ready='1']")

            # The exact prompt and the exact image the backend got are on the page.
            assert page.inner_text("#ask-prompt") == body["prompt"]
            assert page.get_attribute("#ask-prompted-image", "src") == body["prompted_image"]
            assert page.eval_on_selector("#ask-prompted-image", "i => [i.naturalWidth, i.naturalHeight]") == [640, 480]
            assert page.is_visible("#ask-test-model") and body["test_model"] is True

            # The colour the prompt names for "the box" is the colour its box is drawn in, on the page and in
            # the image the model saw.
            named = re.search(r'enclosed in the (\w+) box is called "the box"', body["prompt"])
            assert named, body["prompt"]
            rgb = PALETTE[COLOR_NAMES.index(named.group(1))]
            det = next(d for d in body["detections"] if d["concept"] == "the box")
            assert det["color"] == "#{:02x}{:02x}{:02x}".format(*rgb) and det["color_name"] == named.group(1)
            assert _pixels_near(page, "#ask-result canvas", rgb) > 300
            if "the cup" not in {d["concept"] for d in body["detections"]}:  # then nothing is drawn in the cup's
                cup_rgb = PALETTE[cup["color_slot"] % len(PALETTE)]  # colour, which index order would use first
                assert _pixels_near(page, "#ask-result canvas", cup_rgb, tol=25) < 30
            seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["prompted_image"].split(",", 1)[1]))))
            x1, y1, x2, _ = (round(v) for v in det["box"])
            edge = seen[min(max(y1 + 1, 0), 479), max(x1, 0) : min(x2, 640)]
            assert (np.abs(edge.astype(int) - rgb).max(axis=1) <= 10).mean() > 0.8  # the outline, in that colour
            assert errors == []
            browser.close()
    finally:
        for name in ("the cup", "the box"):
            httpx.delete(f"{server}/concepts/{name}", headers=HEADERS)


def test_localize_against_a_saved_concept_with_masks_and_indexing_progress(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from pycocotools import mask as mask_utils

    concept = _create(server, "the printed box", "box_f0000.jpg", list(BOX))
    rgb = tuple(int(concept["color"][i : i + 2], 16) for i in (1, 3, 5))
    try:
        with sync_api.sync_playwright() as pw:
            browser, page, errors = _open_page(pw, server)

            # Localize with the saved concept as the examples (no Teach photos at all), with its mask.
            page.click(".tab[data-tab='localize']")
            page.select_option("#localize-examples", "the printed box")
            page.set_input_files("#localize-file", str(REAL / "box_f0230.jpg"))
            page.check("#localize-segment")
            with page.expect_response(lambda r: r.url.endswith("/localize")) as answer:
                page.click("#localize-button")
            body = answer.value.json()
            page.wait_for_selector("#localize-result .card[data-found='1'] canvas")
            assert body["concept"] == "the printed box" and body["color"] == concept["color"]
            assert "found" in page.inner_text("#localize-result")
            assert _pixels_near(page, "#localize-result canvas", rgb) > 200
            # The page's RLE decoder reads the server's mask exactly as pycocotools does.
            rle = body["instances"][0]["mask"]
            truth = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            ones, index_sum = page.evaluate(
                "rle => { const m = decodeRle(rle); let n = 0, s = 0;"
                " for (let i = 0; i < m.length; i++) if (m[i]) { n++; s += i; } return [n, s]; }",
                rle,
            )
            flat = np.flatnonzero(truth.reshape(-1))
            assert ones == len(flat) > 1000 and index_sum == int(flat.sum())

            # Concepts: each view's agreement with the others; dropping the odd one (a coffee photo) from the page.
            files = [("images", (n, (REAL / n).read_bytes(), "image/jpeg")) for n in ("box_f0000.jpg", "coffee.jpg")]
            data = {"name": "mixed box", "boxes": f"[{list(BOX)}, null]"}
            mixed = httpx.post(f"{server}/concepts", data=data, files=files, headers=HEADERS, timeout=60).json()
            coffee = mixed["views"][1]["view_id"]
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            page.click(".tab[data-tab='concepts']")
            card = ".concept[data-name='mixed box']"
            assert "agrees" in page.inner_text(f"{card} figure[data-view-id='{coffee}']")
            page.click(f"{card} figure[data-view-id='{coffee}'] >> text=Drop")
            page.wait_for_function(f'document.querySelectorAll("{card} figure").length === 1')
            assert "removed 1 view" in page.inner_text("#status")
            left = httpx.get(f"{server}/concepts/mixed box").json()["views"]
            assert [v["view_id"] for v in left] == [mixed["views"][0]["view_id"]]

            # Indexing progress: counts while it runs, on whatever tab the user is, then the finished run.
            # (recomputing every photo: the library is unchanged, so "Update index" would have nothing to do)
            # Ten photos can be indexed between two of the page's 1 s polls on an idle machine, so the first two
            # status answers the page gets are held at "3/10 files" (the server's own counting is tested in
            # tests/test_server_results.py); the answers after them are the real run's.
            held = {"answers": 0}

            def hold_progress(route: Any) -> None:
                real = route.fetch()
                body = real.json()
                if held["answers"] < 2:
                    held["answers"] += 1
                    running = {"state": "running", "phase": "computing", "done": 3, "total": 10}
                    body["indexing"] = {**body["indexing"], **running, "files_per_s": 2.0, "eta_s": 3.5}
                route.fulfill(response=real, json=body)

            page.route("**/library/status", hold_progress)
            assert httpx.post(f"{server}/library/index?reindex=true", headers=HEADERS).status_code == 202
            page.click(".tab[data-tab='search']")
            page.wait_for_function(
                "/indexing the library: [0-9]+\\/10 files/.test(document.querySelector('#index-progress-text')"
                ".textContent)"
            )
            page.click(".tab[data-tab='teach']")
            assert page.is_visible("#index-progress")
            page.wait_for_selector("#index-progress", state="hidden", timeout=60_000)
            assert re.search(r"index: 10 photos/videos.*in \d+ s", page.inner_text("#index-status"))
            assert errors == []
            browser.close()
    finally:
        for name in ("the printed box", "mixed box"):
            httpx.delete(f"{server}/concepts/{name}", headers=HEADERS)


def _evil_page(server: str) -> str:
    """Another site's page: everything a browser lets it send to the server without the server's consent."""
    return f"""<!doctype html><html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="post" enctype="multipart/form-data" action="{server}/concepts" target="sink">
  <input name="name" value="my box"><input name="replace" value="true"><input name="boxes" value="[null]">
</form>
<script>
(async () => {{
  const png = Uint8Array.from(atob(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"),
    c => c.charCodeAt(0));
  const form = new FormData();
  form.append("name", "my box"); form.append("replace", "true"); form.append("boxes", "[null]");
  form.append("images", new Blob([png], {{type: "image/png"}}), "x.png");
  try {{ await fetch("{server}/concepts", {{method: "POST", mode: "no-cors", body: form}}); }} catch (e) {{}}
  try {{ await fetch("{server}/library/index?reindex=true", {{method: "POST", mode: "no-cors"}}); }} catch (e) {{}}
  try {{ await fetch("{server}/concepts/my%20box", {{method: "DELETE", mode: "no-cors"}}); }} catch (e) {{}}
  const sink = document.querySelector("iframe");
  sink.onload = () => {{ window.done = true; }};
  document.getElementById("f").submit();
  setTimeout(() => {{ window.done = true; }}, 5000);
}})();
</script></body></html>"""
