"""Bad input at the command line: one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from focuskit.cli.main import app

runner = CliRunner()


def _run(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.stderr if result.stderr_bytes is not None else result.output


@pytest.fixture
def imgs(make_image) -> dict[str, Path]:
    return {"a": make_image("a.png", (64, 48)), "q": make_image("q.png", (64, 48), seed=1)}


def test_no_supports(imgs: dict[str, Path]) -> None:
    code, err = _run(["localize", "--query", str(imgs["q"])])
    assert code == 2 and "focuskit: error: no supports given" in err and "k >= 1" in err


def test_mismatched_counts(imgs: dict[str, Path]) -> None:
    code, err = _run(["localize", "--query", str(imgs["q"]), "--support", str(imgs["a"]), "--support",
                      str(imgs["a"]), "--box", "1,1,10,10"])  # fmt: skip
    assert code == 2 and "got 2 --support and 1 --box" in err


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("0,0,100,10", "outside the 64x48 image"),
        ("5,5,5,20", "zero or negative area"),
        ("1,2,3", "four numbers"),
    ],
)
def test_bad_boxes(imgs: dict[str, Path], box: str, message: str) -> None:
    code, err = _run(["localize", "--query", str(imgs["q"]), "--support", str(imgs["a"]), "--box", box])
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_and_corrupt_images(imgs: dict[str, Path], tmp_path: Path) -> None:
    code, err = _run(
        ["localize", "--query", str(tmp_path / "nope.jpg"), "--support", str(imgs["a"]), "--box", "1,1,9,9"]
    )
    assert code == 2 and "not found" in err and "nope.jpg" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x89PNG garbage")
    code, err = _run(["localize", "--query", str(imgs["q"]), "--support", str(bad), "--box", "1,1,9,9"])
    assert code == 2 and "cannot decode" in err and "bad.jpg" in err


def test_unknown_engine(imgs: dict[str, Path]) -> None:
    code, err = _run(["localize", "--query", str(imgs["q"]), "--support", str(imgs["a"]), "--box", "1,1,9,9",
                      "--engine", "magic"])  # fmt: skip
    assert code == 2 and "unknown engine 'magic'" in err


def test_eval_malformed_line(tmp_path: Path, imgs: dict[str, Path]) -> None:
    good = {
        "supports": [{"image": str(imgs["a"]), "box": [1, 1, 9, 9]}],
        "query": {"image": str(imgs["q"]), "box": None},
    }
    f = tmp_path / "eps.jsonl"
    f.write_text(json.dumps(good) + "\n" + '{"supports": [}\n')
    code, err = _run(["eval", "--episodes", str(f)])
    assert code == 2 and "eps.jsonl:2: not valid JSON" in err


@pytest.mark.parametrize("shots", ["0", "1,x", ""])
def test_eval_bad_shots(tmp_path: Path, shots: str) -> None:
    code, err = _run(["eval", "--episodes", str(tmp_path / "x.jsonl"), "--shots", shots])
    assert code == 2 and "shots" in err


def test_draw_with_unknown_extension_fails_before_any_work(imgs: dict[str, Path], tmp_path: Path) -> None:
    code, err = _run(["localize", "--query", str(imgs["q"]), "--support", str(imgs["a"]), "--box", "1,1,9,9",
                      "--engine", "template", "--draw", str(tmp_path / "out.xyz")])  # fmt: skip
    assert code == 2 and "unknown image extension '.xyz'" in err


def test_eval_limit_must_be_positive(tmp_path: Path) -> None:
    code, err = _run(["eval", "--episodes", str(tmp_path / "x.jsonl"), "--limit", "-1"])
    assert code == 2 and "--limit" in err
