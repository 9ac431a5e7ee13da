"""Shared fixtures. No test reaches the network: sockets to anything but loopback fail."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tiny models on 2 shared cores: one OpenMP thread per process avoids barrier stalls that made tests 4x slower.
# Set before anything imports torch; subprocesses started by tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Rebuildable files (the encoder's ONNX export, demo data) go to a folder of this test session, not the user's cache.
os.environ.setdefault("FOCUSKIT_CACHE_DIR", tempfile.mkdtemp(prefix="focuskit-test-cache-"))

_LOOPBACK = ("127.", "localhost", "::1", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else str(address)
    if self.family == socket.AF_UNIX or str(host).startswith(_LOOPBACK):
        return _real_connect(self, address)  # type: ignore[arg-type]
    raise OSError(f"tests may not reach the network (tried {address!r})")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box spinning threads cost 10x.

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; the caller's thread count comes back after.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_image(tmp_path: Path):
    """Write an RGB noise image (optionally with a colored rectangle) and return its path."""

    def _make(
        name: str = "img.png",
        size: tuple[int, int] = (64, 48),
        rect: tuple[int, int, int, int] | None = None,
        color: tuple[int, int, int] = (255, 0, 0),
        seed: int = 0,
    ) -> Path:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
        if rect is not None:
            x1, y1, x2, y2 = rect
            arr[y1:y2, x1:x2] = color
        path = tmp_path / name
        Image.fromarray(arr).save(path)
        return path

    return _make
