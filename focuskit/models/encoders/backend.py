"""Which runtime builds the network encoders: "torch" (the reference), "onnx", or "auto" (ONNX when it can be had).

The torch encoders are the reference and the default: training, fine-tuning and anything that needs gradients or
the module itself use them. A query-only command (`focuskit detect`) asks for "auto" around its work, so a fresh
process runs the encoder exported to ONNX through OpenCV's DNN module and never imports torch (~2 s of a ~3 s
cold start). The embeddings are the same to ~1e-5 and carry the same encoder tag, so memories and libraries built
with one runtime are read with the other.

`FOCUSKIT_ENCODER_BACKEND=torch|onnx|auto` overrides the code's choice, e.g. `torch` to rule the ONNX path out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, cast

from focuskit.core.errors import ConfigError

Backend = Literal["torch", "onnx", "auto"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "auto")
BACKEND_ENV = "FOCUSKIT_ENCODER_BACKEND"
# A context variable, not a global: a server or a test that asks for "auto" in one request does not change another.
_backend: ContextVar[str] = ContextVar("focuskit_encoder_backend", default="torch")


def _checked(name: str, where: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"{where} must be one of {', '.join(BACKENDS)}, got {name!r}")
    return cast(Backend, name)


def encoder_backend() -> Backend:
    """The backend in force: `$FOCUSKIT_ENCODER_BACKEND` when set, else the innermost `use_encoder_backend`."""
    env = os.environ.get(BACKEND_ENV, "").strip().lower()
    if env:
        return _checked(env, BACKEND_ENV)
    return cast(Backend, _backend.get())


@contextmanager
def use_encoder_backend(name: Backend) -> Iterator[None]:
    """Build encoders with `name` inside the block (the environment variable still wins, and is checked here, so a
    misspelt value is refused before any work rather than when the first encoder is built)."""
    token = _backend.set(_checked(name, "encoder backend"))
    try:
        encoder_backend()
        yield
    finally:
        _backend.reset(token)
