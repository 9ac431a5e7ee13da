"""`ServerSettings`: everything `focuskit serve` is started with, as one dataclass (YAML via `load_config`).

The defaults are the safe ones: loopback only, no token needed on loopback, a 20 MB upload limit and a 40-megapixel
limit (a phone photo is 12-50 MP; a decompression bomb is billions), no VLM backend (`/ask` then answers 503 with
how to configure one instead of failing later).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from focuskit.core.errors import ConfigError
from focuskit.library.index import LibraryConfig

TOKEN_ENV = "FOCUSKIT_TOKEN"
"""Environment variable read for the bearer token when `--token` is not given."""


@dataclass
class BackendSettings:
    """The VLM that answers `/ask`. 'none' disables `/ask`; 'hf' loads a local transformers model; 'openai' talks to
    any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API)."""

    kind: Literal["none", "hf", "openai"] = "none"
    model: str | None = None
    """Local path or hub id ('hf'), or the served model name ('openai')."""
    base_url: str | None = None
    """Endpoint for 'openai', e.g. http://127.0.0.1:11434/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key, so the key never sits in a config file."""
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.kind == "hf" and not self.model:
            raise ConfigError("backend kind 'hf' needs a model (a local checkpoint path or hub id): set backend.model")
        if self.kind == "openai" and not self.base_url:
            raise ConfigError("backend kind 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1")
        if self.timeout_s <= 0:
            raise ConfigError(f"backend timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class ServerSettings:
    """How the server runs and what it may touch. Only `memory_dir` and `library_dir` are ever read or written."""

    memory_dir: Path = Path("focuskit-memory")
    """Concept memory directory (created if missing)."""
    library_dir: Path | None = None
    """Photo folder to index and search; None serves concepts, localize, detect and ask only."""
    state_dir: Path | None = None
    """Where the library index lives; default `<memory_dir>/library`."""
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    """Bearer token required on every API route when set (from --token or FOCUSKIT_TOKEN)."""
    max_upload_bytes: int = 20_000_000
    """Per uploaded file; a request may carry up to `max_files` of them."""
    max_files: int = 16
    max_pixels: int = 40_000_000
    thumbnail_size: int = 256
    inference_slots: int = 2
    """Model calls (detect, localize, ask, embedding new concepts) run at most this many at once; the rest queue.
    More parallel CPU inference than cores only adds contention, and keeps light requests (search, images) waiting."""
    engines: list[str] = field(default_factory=lambda: ["matching", "template"])
    """Localizer engines `/localize` may use (the VLM engine loads a checkpoint: add 'vlm' explicitly)."""
    detector_tau: float | None = None
    """Detection threshold; None uses the detector's default."""
    max_instances_limit: int = 20
    """The most instances per concept `/detect` and `/localize` may be asked for (`max_instances`)."""
    segmenter: str = "grabcut"
    """Segmenter for masks (`segment=true` on `/detect`, `/localize`, `/concepts`): 'grabcut' needs no weights."""
    allow_hosts: list[str] = field(default_factory=list)
    """Extra names the server answers to in the Host header (besides its bind address, localhost, 127.0.0.1, [::1]),
    e.g. the machine's LAN name or the reverse proxy's public name."""
    allow_origins: list[str] = field(default_factory=list)
    """Extra origins (scheme://host[:port]) whose pages may write (POST/PATCH/DELETE) besides the server's own."""
    header_timeout_s: float = 10.0
    """A connection must deliver its request line and headers within this many seconds (also the keep-alive idle
    limit between requests)."""
    body_idle_timeout_s: float = 15.0
    """A request body may pause at most this long between chunks."""
    body_timeout_s: float = 300.0
    """A request body must be complete within this many seconds of the request starting."""
    index_on_start: bool = True
    """Bring the library index up to date in the background when the server starts."""
    library: LibraryConfig = field(default_factory=LibraryConfig)
    backend: BackendSettings = field(default_factory=BackendSettings)

    def __post_init__(self) -> None:
        self.memory_dir = Path(self.memory_dir).expanduser()
        if self.library_dir is not None:
            self.library_dir = Path(self.library_dir).expanduser()
        if self.state_dir is not None:
            self.state_dir = Path(self.state_dir).expanduser()
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        for name in (
            "max_upload_bytes", "max_files", "max_pixels", "thumbnail_size", "inference_slots", "max_instances_limit",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_idle_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        from focuskit.models.segmenters import list_segmenters

        if self.segmenter not in list_segmenters():
            raise ConfigError(f"segmenter must be one of {list_segmenters()}, got {self.segmenter!r}")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError(
                "token must be at least 8 characters (it guards your photos); generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe())'"
            )
        if not self.is_loopback and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host!r} without a token: anyone on the network could read your photos. "
                f"Pass --token (or set {TOKEN_ENV}), or keep the default host 127.0.0.1"
            )

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.memory_dir / "library"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1); a wildcard like 0.0.0.0 is not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_from_env(given: str | None) -> str | None:
    """The token given on the command line, else the environment variable's, else None."""
    if given:
        return given
    value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None
