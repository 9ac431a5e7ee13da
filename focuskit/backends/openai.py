"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted APIs) as a `VLMBackend`.

Images travel inline as base64 data URLs in `image_url` content parts, the one image form every compatible server
accepts. Connection failures, timeouts, 429 and 5xx answers are retried with exponential backoff; whatever still
fails becomes a `BackendError` that names the endpoint and the cause, so a server that is down costs the user one
clear line and nothing else (the memory and the detections are untouched).
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

from focuskit.backends.base import GenerationOptions, prepare_images
from focuskit.core.errors import BackendError, ConfigError

if TYPE_CHECKING:  # httpx is imported when a client is made, so reading OpenAIConfig stays light
    import httpx

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    """Up to and including the version prefix, e.g. http://localhost:11434/v1 for Ollama."""
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (sent as a Bearer token when set); never stored in configs."""
    timeout: float = 120.0
    connect_timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.5
    """Seconds before the first retry, doubled after each."""
    max_side: int = 1024
    image_format: Literal["jpeg", "png"] = "jpeg"
    """JPEG keeps requests small; PNG sends the exact pixels."""
    supports_video: bool = False
    """OpenAI's chat schema has no video part: frames go as a sequence of images. Set True only for servers that
    read consecutive images as a clip."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError(f"timeouts must be > 0, got {self.timeout} and {self.connect_timeout}")
        if self.retries < 0 or self.backoff < 0:
            raise ConfigError(f"retries and backoff must be >= 0, got {self.retries} and {self.backoff}")


def image_data_url(image: Image.Image, fmt: str = "jpeg", quality: int = 90) -> str:
    """A `data:image/...;base64,...` URL of the image."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class OpenAIBackend:
    """Chat completions over HTTP; `client` may be injected (e.g. to share a connection pool)."""

    def __init__(self, config: OpenAIConfig | None = None, *, client: httpx.Client | None = None) -> None:
        self.config = config or OpenAIConfig()
        self.name = f"openai:{self.config.model}@{self.config.base_url}"
        self.supports_video = self.config.supports_video
        import httpx

        timeout = httpx.Timeout(self.config.timeout, connect=self.config.connect_timeout)
        self._client = client or httpx.Client(timeout=timeout)

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request_body(
        self, images: Sequence[Image.Image], prompt: str, options: GenerationOptions, video: bool
    ) -> dict[str, Any]:
        frames = prepare_images(images, max_side=self.config.max_side)
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_data_url(f, self.config.image_format)}} for f in frames
        ]
        text = prompt
        if video and frames:
            text = f"The {len(frames)} images are consecutive frames of one video, in order.\n{prompt}"
        content.append({"type": "text", "text": text})
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": options.max_new_tokens,
            "temperature": options.temperature,
            "stream": False,
        }
        if video and self.config.supports_video:
            body["focuskit_video"] = True  # only when opted in: focuskit's server reads it, strict APIs would not
        return body

    def generate(
        self,
        images: Sequence[Image.Image],
        prompt: str,
        *,
        options: GenerationOptions | None = None,
        video: bool = False,
    ) -> str:
        body = self.request_body(images, prompt, options or GenerationOptions(), video)
        return _answer_text(self._post(body), self.url)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        delay = self.config.backoff
        attempts = self.config.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                resp = self._client.post(self.url, json=body, headers=self._headers())
            except httpx.TimeoutException:
                last = f"timed out after {self.config.timeout:g} s"
            except httpx.TransportError as exc:
                last = f"unreachable ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise BackendError(f"{self.url} answered with non-JSON: {resp.text[:200]!r}") from None
                    if not isinstance(data, dict):
                        raise BackendError(f"{self.url} answered with {type(data).__name__}, expected an object")
                    return data
                detail = _error_detail(resp)
                if resp.status_code not in RETRY_STATUS:
                    raise BackendError(f"{self.url} refused the request: HTTP {resp.status_code} {detail}")
                last = f"HTTP {resp.status_code} {detail}"
            if attempt + 1 < attempts:
                time.sleep(delay)
                delay *= 2
        raise BackendError(f"{self.url} failed after {attempts} attempt(s): {last}")

    def close(self) -> None:
        self._client.close()


def _error_detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))[:300]
    return str(data)[:200]


def _answer_text(data: dict[str, Any], url: str) -> str:
    """The assistant text of a chat completion; content may be a string or a list of text parts."""
    try:
        message = data["choices"][0]["message"]
        content = message["content"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{url} answered without choices[0].message.content: {str(data)[:200]}") from None
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict)).strip()
    if not isinstance(content, str):
        raise BackendError(f"{url} answered with content of type {type(content).__name__}")
    return content.strip()
