"""End to end in headless Chromium: the real `focuskit serve` process, a user drawing a box with the mouse on a
library photo, creating a concept, and finding it in the library gallery with its boxes drawn."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`focuskit serve` in a subprocess on a free loopback port; yields its URL once the index is built."""
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


def test_draw_a_box_create_a_concept_and_find_it_in_the_library(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")

        # Teach: pick a library photo and drag a box around the object with the mouse.
        page.click("#pick-library")
        page.click("#library-picker img[data-path='box_f0000.jpg']")
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
        assert [c["name"] for c in before["concepts"]] == ["my box"] and len(before["concepts"][0]["views"]) == 1
        browser.close()


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
