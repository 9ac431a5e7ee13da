"""CLI start-up, issue 16: `--help`, argument errors and config modules import no heavy library (torch, FAISS,
OpenCV, PyAV, httpx, transformers), and arguments are checked before any model loads. Checked in fresh processes
by the modules they import, not by wall time (which a shared machine makes meaningless); the timings are in
benchmarks/cli_cold_start.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "faiss", "cv2", "av", "httpx", "transformers", "torchvision")
PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_after(body: str) -> list[str]:
    """Which heavy modules are loaded after running `body` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = PROBE.format(body=body, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "body",
    [
        "import focuskit.personalize.config as c; c.load_pekit_config(None)",
        "import focuskit.memory.config, focuskit.matcher.config, focuskit.search.config",
        "import focuskit.backends.openai as o; o.OpenAIConfig()",
        "import focuskit.personalize, focuskit.cli.inputs, focuskit.exports",
    ],
)
def test_config_modules_stay_light(body: str) -> None:
    assert heavy_after(body) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["detect", "--help"],
        ["detect", "x.jpg", "-m", "m", "--tau", "abc"],  # click's own check
        ["detect", "{missing}", "-m", "m"],  # ours: the input does not exist
        ["ask", "{image}", "   ", "-m", "m"],  # an empty question, refused before the memory or a model
        ["detect", "{image}", "-m", "m", "--out", "r.txt"],  # an export format we cannot tell
        ["concept", "prune", "x", "-m", "m"],
    ],
)
def test_help_and_argument_errors_load_no_model_code(argv: list[str], tmp_path: Path) -> None:
    image = ROOT / "focuskit" / "assets" / "realphotos" / "cup_f0035.jpg"
    args = [a.format(missing=tmp_path / "missing.jpg", image=image) for a in argv]
    body = (
        "import sys\nfrom focuskit.cli.main import app\n"
        f"try:\n    app(args={args!r}, prog_name='focuskit')\nexcept SystemExit as e:\n    code = e.code\n"
        "assert code in (0, 2), code"
    )
    assert heavy_after(body) == []


def test_the_light_segmenter_list_matches_the_factory() -> None:
    from focuskit.models.segmenters import list_segmenters
    from focuskit.personalize.config import SEGMENTERS

    assert list(SEGMENTERS) == list_segmenters()
