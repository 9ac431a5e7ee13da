"""The embedding step runs outside the index: two local processes embed halves of a folder (as two cluster tasks
would), `ingest` commits their batch files, and search answers as after an ordinary `update`; the process pool
gives the same index as one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from focuskit.core.box import Box
from focuskit.library import LibraryConfig, LibraryIndex
from focuskit.memory.store import ConceptMemory

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
PHOTOS = ("box_f0000.jpg", "box_f0100.jpg", "cup_f0010.jpg", "coffee.jpg")
FAST = {"proposers": ["windows"], "batch_size": 1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(REAL / name, root / name)
    return root


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> ConceptMemory:
    mem = ConceptMemory(tmp_path_factory.mktemp("mem"))
    mem.add("box", [REAL / "box_f0000.jpg"], boxes=[Box(296.0, 14.0, 597.0, 242.0)])
    return mem


def _hits(index: LibraryIndex, memory: ConceptMemory) -> list[tuple[str, float, list[float]]]:
    return [
        (h.path, round(h.score, 3), [round(v) for v in h.boxes[0].as_list()])
        for h in index.search("box", memory, tau=0.3)
    ]


def test_two_processes_embed_halves_and_ingest_equals_one_update(
    folder: Path, memory: ConceptMemory, tmp_path: Path
) -> None:
    config = tmp_path / "library.yaml"
    config.write_text(yaml.safe_dump(FAST))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "focuskit.cli.main", "library", "embed", str(folder), "--config", str(config)]
    procs = [
        subprocess.Popen([*cmd, "--part", f"{i}/2", "--out", str(tmp_path / f"part{i}.npz"), "--threads", "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert "embedded 2 file(s)" in out

    ingested = LibraryIndex(tmp_path / "ingested", LibraryConfig(**FAST))
    report = ingested.ingest([tmp_path / "part0.npz", tmp_path / "part1.npz"])
    assert (report.added, report.items) == (len(PHOTOS), len(PHOTOS))

    direct = LibraryIndex(tmp_path / "direct", LibraryConfig(**FAST), encoder=memory.encoder)
    direct.update(folder, progress=False)
    assert _hits(ingested, memory) == _hits(direct, memory)
    assert {"box_f0000.jpg", "box_f0100.jpg"} <= {p for p, _, _ in _hits(ingested, memory)}
    # The folder is now indexed: an ordinary update finds nothing to compute.
    again = LibraryIndex(tmp_path / "ingested", LibraryConfig(**FAST), encoder=memory.encoder).update(
        folder, progress=False
    )
    assert (again.computed, again.unchanged) == (0, len(PHOTOS))


def test_a_two_process_pool_builds_the_same_index(folder: Path, memory: ConceptMemory, tmp_path: Path) -> None:
    pooled = LibraryIndex(tmp_path / "pooled", LibraryConfig(**FAST, workers=2), encoder=memory.encoder)
    report = pooled.update(folder, progress=False)
    assert (report.added, report.items, report.failed) == (len(PHOTOS), len(PHOTOS), [])
    single = LibraryIndex(tmp_path / "single", LibraryConfig(**FAST), encoder=memory.encoder)
    single.update(folder, progress=False)
    assert _hits(pooled, memory) == _hits(single, memory)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--part", "x"], "--part must be I/N"),
        (["--part", "2/2"], "part must be in [0, 2)"),
        (["--out", "."], "is a folder: give a file path"),
    ],
)
def test_embed_command_refuses_bad_input_in_one_line(
    folder: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from focuskit.cli.main import app

    base = ["library", "embed", str(folder), "--out", str(tmp_path / "b.npz")]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b.npz").exists()
