"""`focuskit detect` in a fresh process runs the encoder on ONNX and never imports torch (issue 16's cold start),
and finds the same boxes with the same scores as the torch reference (`FOCUSKIT_ENCODER_BACKEND=torch`).

Fresh processes, checked by the modules they load (timings: benchmarks/cli_cold_start.py). Real photos: frames of
the opencv-doc cup video in focuskit/assets/realphotos; the memory is one cup view from another frame.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "focuskit" / "assets" / "realphotos"
QUERIES = [REAL / n for n in ("cup_f0035.jpg", "cup_f0120.jpg", "cup_f0195.jpg", "box_f0045.jpg")]
# Runs the CLI as `focuskit` does, then reports on stderr whether torch was ever imported.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("TORCH_LOADED=" + str("torch" in sys.modules), file=sys.stderr))
sys.argv = ["focuskit", *sys.argv[1:]]
runpy.run_module("focuskit.cli.main", run_name="__main__")
"""


def _env(cache: Path, backend: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOCUSKIT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("FOCUSKIT_ENCODER_BACKEND", None)
    if backend is not None:
        env["FOCUSKIT_ENCODER_BACKEND"] = backend
    return env


def _detect(memory: Path, cache: Path, backend: str | None) -> tuple[list[dict], bool]:
    """(one JSON record per query image, whether torch was imported) of `focuskit detect --json` in a new process."""
    args = [*map(str, QUERIES), "-m", str(memory), "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "detect", *args],
        env=_env(cache, backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(QUERIES)
    flags = [line for line in proc.stderr.splitlines() if line.startswith("TORCH_LOADED=")]
    return records, flags[-1] == "TORCH_LOADED=True"


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(memory with one 'cup' concept, an empty private cache)."""
    root = tmp_path_factory.mktemp("cold")
    mem, cache = root / "memory", root / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "focuskit.cli.main", "concept", "add", "cup", str(REAL / "cup_f0010.jpg"),
         "--box", "308,122,413,381", "-m", str(mem)],
        env=_env(cache, "torch"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return mem, cache


def _assert_same(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g["image"] == w["image"]
        assert [d["concept"] for d in g["detections"]] == [d["concept"] for d in w["detections"]]
        for dg, dw in zip(g["detections"], w["detections"], strict=True):
            assert dg["box"] == pytest.approx(dw["box"], abs=1e-3 * max(g["width"], g["height"]))
            assert dg["score"] == pytest.approx(dw["score"], abs=1e-3)
        assert g["best_scores"].keys() == w["best_scores"].keys()
        for name, score in w["best_scores"].items():
            assert g["best_scores"][name] == pytest.approx(score, abs=1e-3)


def test_detect_without_torch_finds_what_torch_finds(memory: tuple[Path, Path]) -> None:
    mem, cache = memory
    reference, loaded = _detect(mem, cache, "torch")
    assert loaded and not list(cache.glob("onnx/*.onnx"))  # the reference path exports nothing
    assert reference[0]["detections"], "the cup should be found in the first query"
    first, _ = _detect(mem, cache, None)  # exports the encoder once (with torch), then uses it
    assert len(list(cache.glob("onnx/*.onnx"))) == 1
    later, loaded = _detect(mem, cache, None)
    assert not loaded, "a detect run with the ONNX export in the cache imported torch"
    _assert_same(first, reference)
    _assert_same(later, reference)
