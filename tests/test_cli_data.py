"""`focuskit data episodes|stats|formats` end to end on a tiny GOT-10k tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.data.episodes_jsonl import load_episodes

runner = CliRunner()


def write_got10k(root: Path, split: str = "val", n_seqs: int = 3, n_frames: int = 8) -> Path:
    split_dir = root / split
    split_dir.mkdir(parents=True)
    names = []
    for s in range(n_seqs):
        name = f"GOT-10k_{split.title()}_{s + 1:06d}"
        names.append(name)
        seq = split_dir / name
        seq.mkdir()
        for i in range(n_frames):
            Image.fromarray(np.full((40, 64, 3), 20 * i + s, dtype=np.uint8)).save(seq / f"{i + 1:08d}.jpg")
        (seq / "groundtruth.txt").write_text("".join(f"{4 + i},{2 + s},20,16\n" for i in range(n_frames)))
        (seq / "absence.label").write_text("0\n" * n_frames)
        (seq / "cover.label").write_text("8\n" * n_frames)
        (seq / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: class{s % 2}\n")
    (split_dir / "list.txt").write_text("\n".join(names) + "\n")
    return root


def run(*args: str) -> object:
    return runner.invoke(app, ["data", *args])


def test_episodes_writes_one_file_per_k_with_stats(tmp_path: Path) -> None:
    root = write_got10k(tmp_path / "GOT-10k")
    out = tmp_path / "out" / "episodes.jsonl"
    png = tmp_path / "out" / "stats.png"
    res = run(
        "episodes", "--format", "got10k", "--root", str(root), "--shots", "1,2,4", "--split", "val",
        "--out", str(out), "--negatives", "2", "--stats-png", str(png), "--stats-json", str(tmp_path / "s.json"), "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for k in (1, 2, 4):
        eps = load_episodes(tmp_path / "out" / f"episodes.k{k}.jsonl")
        assert {e.k for e in eps} == {k} and len(eps) == 3 + 2
        assert sum(e.query_box is None for e in eps) == 2
    assert not out.exists()
    assert "k=4: 3 episode(s) + 2 negative(s)" in res.output
    assert png.stat().st_size > 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["episodes"] == {"1": 3, "2": 3, "4": 3}


def test_episodes_single_k_with_downscaling_and_hf_export(tmp_path: Path) -> None:
    root = write_got10k(tmp_path / "GOT-10k", n_seqs=2)
    out = tmp_path / "eps.jsonl"
    res = run(
        "episodes", "-f", "got10k", "--root", str(root), "--shots", "2", "--out", str(out), "--max-side", "32",
        "--hf-out", str(tmp_path / "hf"), "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    eps = load_episodes(out)
    assert len(eps) == 2
    assert eps[0].supports[0].box.as_list() == [2.0, 1.0, 12.0, 9.0]  # (4,2,20,16) xywh halved
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "hf")).num_rows == 2


def test_category_partition_from_the_command_line(tmp_path: Path) -> None:
    root = write_got10k(tmp_path / "GOT-10k", n_seqs=4)
    outs = {}
    for part in ("train", "test"):
        out = tmp_path / f"{part}.jsonl"
        res = run(
            "episodes", "-f", "got10k", "--root", str(root), "--shots", "1", "--out", str(out),
            "--partition", "category", "--part", part, "--seed", "1", "-q",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        outs[part] = {e.meta["category"] for e in load_episodes(out)}
    assert outs["train"].isdisjoint(outs["test"]) and outs["train"] | outs["test"] == {"class0", "class1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "got10k", "--root", "{tmp}/nowhere"], "val/list.txt"),
        (["--format", "lasot", "--root", "{tmp}"], "groundtruth.txt"),
        (["--format", "coco", "--root", "{tmp}"], "unknown dataset format 'coco'"),
        (["--format", "got10k", "--root", "{got}", "--split", "dev"], "has splits train, val, test"),
        (["--format", "got10k", "--root", "{got}", "--shots", "0"], "shots must be >= 1"),
        (["--format", "got10k", "--root", "{got}", "--partition", "by-color"], "partition must be"),
        (["--format", "got10k", "--root", "{got}", "--fractions", "a,b"], "--fractions"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    got = write_got10k(tmp_path / "GOT-10k", n_seqs=1)
    filled = [a.format(tmp=tmp_path, got=got) for a in args]
    res = run("episodes", *filled, "--out", str(tmp_path / "e.jsonl"), "-q")
    assert res.exit_code == 2, res.output
    assert "focuskit: error:" in res.output and message in res.output
    assert "Traceback" not in res.output


def test_no_episode_at_all_explains_why(tmp_path: Path) -> None:
    root = write_got10k(tmp_path / "GOT-10k", n_frames=3)
    res = run("episodes", "-f", "got10k", "--root", str(root), "--shots", "4", "--out", str(tmp_path / "e.jsonl"), "-q")
    assert res.exit_code == 2
    assert "no episode could be built" in res.output and "3 too_few_usable_frames" in res.output


def test_stats_and_formats(tmp_path: Path) -> None:
    root = write_got10k(tmp_path / "GOT-10k", n_seqs=2)
    res = run("stats", "-f", "got10k", "--root", str(root), "--json", "-q")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["sequences"] == 2 and summary["frames"] == 16 and summary["usable_frames"] == 16
    assert summary["categories"] == 2
    res = run("formats")
    assert res.exit_code == 0 and "got10k" in res.output and "permirs" in res.output
