"""VLM backends: the HTTP backend against a real local server process serving the tiny model, the server's request
handling and limits, retries, timeouts, unreachable endpoints, and `ask` end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from PIL import Image

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.backends.hf import HFBackend
from focuskit.backends.openai import OpenAIBackend, OpenAIConfig, image_data_url
from focuskit.backends.openai_server import ServerLimits, create_app
from focuskit.core.box import Box
from focuskit.core.detections import Detections
from focuskit.core.errors import BackendError, ConfigError, ImageError
from focuskit.memory.store import AugmentConfig, ConceptMemory, EncoderSpec, MemoryConfig
from focuskit.personalize.answer import ask

REPO = Path(__file__).resolve().parents[1]
SHORT = GenerationOptions(max_new_tokens=6)


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`focuskit serve-vlm --model tiny` as a real process on loopback; yields its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "focuskit.cli.main", "serve-vlm", "--model", "tiny", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not come up in 120 s")
            time.sleep(0.3)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def local_tiny() -> HFBackend:
    return HFBackend.load("tiny")


def test_http_backend_talks_to_a_real_server(server: str, local_tiny: HFBackend) -> None:
    backend = OpenAIBackend(OpenAIConfig(base_url=server, model="focuskit", image_format="png", retries=0))
    assert isinstance(backend, VLMBackend)
    image = photo(0)
    remote = backend.generate([image], "What is in the picture?", options=SHORT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server runs single-threaded: same arithmetic, same greedy tokens
    try:
        local = local_tiny.generate([image], "What is in the picture?", options=SHORT)
    finally:
        torch.set_num_threads(threads)
    assert remote == local  # the image and the prompt crossed the wire intact
    models = httpx.get(f"{server}/models", timeout=5).json()
    assert models["data"][0]["id"] == "focuskit"


def test_server_refuses_remote_image_urls(server: str) -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}]}
        ]
    }
    resp = httpx.post(f"{server}/chat/completions", json=body, timeout=10)
    assert resp.status_code == 400 and "data URLs" in resp.json()["error"]["message"]


def test_ask_end_to_end_through_the_server(server: str, tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 32}).create()
    memory = ConceptMemory(tmp_path / "m", encoder=encoder, config=MemoryConfig(augment=AugmentConfig(False, [])))
    memory.add("Bruno", [photo(1)], boxes=[Box(0, 0, 40, 40)], context="my dog")

    class Found:
        def __init__(self, names: list[str]) -> None:
            self.memory, self.names = memory, names

        def detect(self, image, concepts=None) -> Detections:
            return Detections.from_boxes([Box(10, 10, 50, 50)] * len(self.names), [0.9] * len(self.names), self.names)

        def concept_scores(self, image, concepts=None) -> dict[str, float]:
            return {}

    backend = OpenAIBackend(OpenAIConfig(base_url=server, retries=0))
    answer = ask(photo(2), "What is Bruno doing?", memory, backend, detector=Found(["Bruno"]), options=SHORT)
    assert answer.personalized and isinstance(answer.text, str)
    assert 'called "Bruno"' in answer.prompt and "my dog" in answer.prompt
    assert not np.array_equal(np.asarray(answer.annotated_image), np.asarray(photo(2)))
    plain = ask(photo(2), "What is this?", memory, backend, detector=Found([]), options=SHORT)
    assert plain.prompt == "What is this?" and not plain.personalized


def test_hf_backend_reads_videos(local_tiny: HFBackend) -> None:
    assert local_tiny.supports_video
    frames = [photo(i, (64, 48)) for i in range(4)]
    assert isinstance(local_tiny.generate(frames, "What happens?", options=SHORT, video=True), str)
    with pytest.raises(ImageError, match="over the 40,000,000-pixel limit"):
        local_tiny.generate([Image.new("RGB", (8000, 6000))], "too big?", options=SHORT)


# --- protocol details, against in-process apps ------------------------------------------------------------------
class Echo:
    """A backend that reports what it received."""

    name = "echo"
    supports_video = True

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], str, bool]] = []

    def generate(self, images, prompt, *, options=None, video=False) -> str:
        self.calls.append(([im.size for im in images], prompt, video))
        return f"{len(images)} image(s): {prompt}"


def client_for(app: FastAPI, **config) -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(base_url="http://testserver/v1", **config), client=TestClient(app))


def test_client_and_server_agree_on_the_schema() -> None:
    echo = Echo()
    backend = client_for(create_app(echo), supports_video=True)
    text = backend.generate([photo(0), photo(1, (40, 30))], "Describe.", options=SHORT)
    assert text == "2 image(s): Describe."
    assert echo.calls[-1] == ([(96, 72), (40, 30)], "Describe.", False)
    backend.generate([photo(0), photo(1)], "What happens?", video=True)
    assert echo.calls[-1][2] is True and "consecutive frames" in echo.calls[-1][1]


def test_server_flattens_system_and_history() -> None:
    echo = Echo()
    client = TestClient(create_app(echo))
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Who is in the image?"}]},
        ]
    }
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"].endswith("User: Who is in the image?")
    assert echo.calls[-1][1] == "Be brief.\nUser: Hi\nAssistant: Hello\nUser: Who is in the image?"


@pytest.mark.parametrize(
    "content, status, message",
    [
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], 400, "invalid base64"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}], 400, "cannot decode"),
        ([{"type": "audio", "text": "x"}], 400, "unsupported content part"),
        ([{"type": "image_url", "image_url": {"url": image_data_url(Image.new("RGB", (300, 300)))}}], 413, "pixel"),
    ],
)
def test_server_rejects_bad_content(content: list, status: int, message: str) -> None:
    client = TestClient(create_app(Echo(), limits=ServerLimits(max_image_pixels=200 * 200)))
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    assert resp.status_code == status and message in resp.json()["error"]["message"]


def test_server_limits_body_size_and_refuses_streaming() -> None:
    client = TestClient(create_app(Echo(), limits=ServerLimits(max_body_bytes=1000)))
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert client.post("/v1/chat/completions", json=big).status_code == 413
    streaming = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert client.post("/v1/chat/completions", json=streaming).status_code == 400
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 400


def test_retries_on_503_then_succeeds_and_sends_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCUSKIT_TEST_KEY", "sk-test")
    app = FastAPI()
    seen: list[str | None] = []
    calls = {"n": 0}

    @app.middleware("http")
    async def fail_once(request: Request, call_next: object) -> JSONResponse:
        calls["n"] += 1
        seen.append(request.headers.get("authorization"))
        if calls["n"] == 1:
            return JSONResponse({"error": {"message": "warming up"}}, status_code=503)
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": " ok "}}]})

    backend = client_for(app, api_key_env="FOCUSKIT_TEST_KEY", retries=2, backoff=0.0)
    assert backend.generate([], "ping") == "ok"
    assert calls["n"] == 2 and seen == ["Bearer sk-test", "Bearer sk-test"]


@pytest.mark.parametrize(
    "status, payload, message, calls_expected",
    [
        (400, {"error": {"message": "bad model"}}, "refused the request: HTTP 400 bad model", 1),
        (200, {"result": "no choices"}, "without choices", 1),
        (500, {"error": {"message": "boom"}}, "failed after 3 attempt", 3),
    ],
)
def test_bad_answers_become_backend_errors(status: int, payload: dict, message: str, calls_expected: int) -> None:
    app = FastAPI()
    calls = {"n": 0}

    @app.post("/v1/chat/completions")
    def answer() -> JSONResponse:
        calls["n"] += 1
        return JSONResponse(payload, status_code=status)

    with pytest.raises(BackendError, match=message):
        client_for(app, retries=2, backoff=0.0).generate([], "hi")
    assert calls["n"] == calls_expected


def test_unreachable_endpoint_is_a_clear_error() -> None:
    backend = OpenAIBackend(OpenAIConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", retries=1, backoff=0.0))
    with pytest.raises(BackendError, match=r"failed after 2 attempt\(s\): unreachable"):
        backend.generate([photo(0)], "hello?")


def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # accept, then say nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        backend = OpenAIBackend(OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", timeout=0.5, retries=0))
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"timed out after 0\.5 s"):
            backend.generate([], "hello?")
        assert time.monotonic() - start < 5
    finally:
        stop.set()
        thread.join(2)
        for s in accepted:
            s.close()
        listener.close()


@pytest.mark.parametrize(
    "kwargs", [{"base_url": "localhost:8000"}, {"timeout": 0}, {"retries": -1}, {"image_format": "gif"}]
)
def test_bad_openai_config(kwargs: dict) -> None:
    from focuskit.core.config import from_dict

    with pytest.raises(ConfigError):
        from_dict(OpenAIConfig, kwargs)


def test_hf_backend_ignores_a_checkpoints_generation_config(tmp_path: Path) -> None:
    """Qwen2-VL-Instruct ships repetition_penalty 1.05, top_k 1, top_p 0.001: `ask` must answer as if it did not."""
    import json
    import shutil

    from focuskit.models.vlms import build_tiny_vlm

    plain = build_tiny_vlm().save(tmp_path / "plain")
    instruct = tmp_path / "instruct"
    shutil.copytree(plain, instruct)
    path = instruct / "generation_config.json"
    config = json.loads(path.read_text())
    instruct_defaults = {"do_sample": True, "temperature": 0.1, "top_k": 1, "top_p": 0.001, "repetition_penalty": 1.05}
    path.write_text(json.dumps({**config, **instruct_defaults}))
    images = [photo(3), photo(4)]
    options = GenerationOptions(max_new_tokens=24)
    a = HFBackend.load(plain).generate(images, "Which photo shows my mug?", options=options)
    b_backend = HFBackend.load(instruct)
    assert b_backend.bundle.model.generation_config.repetition_penalty == 1.05  # the file was read
    assert b_backend.generate(images, "Which photo shows my mug?", options=options) == a
