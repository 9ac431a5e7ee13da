"""CLI: `focuskit concept ...`, `detect`, `ask` and `eval-recognition` on real photos, and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.core.io import atomic_write_json
from focuskit.personalize.samples import MOTORBIKE_BOX, sample_photos

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("motorcycle_left", "motorcycle_right", "astronaut", "coffee", "rocket"):
        out[name] = root / f"{name}.jpg"
        sample_photos()[name].save(out[name], quality=95)
    return out


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    mem = tmp_path_factory.mktemp("cli") / "memory"
    box = ",".join(str(int(v)) for v in MOTORBIKE_BOX.to_xyxy())
    code, out = run(
        "concept", "add", "motorbike", photos["motorcycle_left"], "--box", box, "--memory", mem,
        "--context", "my red Yamaha",
    )  # fmt: skip
    assert code == 0, out
    assert "view 1" in out and "given box" in out and "added 'motorbike'" in out
    return mem


def test_list_rename_context_show_remove(memory: Path, photos: dict[str, Path], tmp_path: Path) -> None:
    code, out = run("concept", "add", "cup", photos["coffee"], "--memory", memory, "--show", tmp_path / "shown")
    assert code == 0, out
    assert "auto-picked (score" in out and len(list((tmp_path / "shown").glob("*.png"))) == 1
    code, out = run("concept", "list", "--memory", memory, "--json")
    listing = json.loads(out)
    assert [c["name"] for c in listing["concepts"]] == ["motorbike", "cup"]
    assert listing["encoder"] == "mobilenetv2+parts3w0.3" and listing["concepts"][0]["context"] == "my red Yamaha"
    assert listing["concepts"][0]["color"] != listing["concepts"][1]["color"]
    assert run("concept", "rename", "cup", "espresso cup", "--memory", memory)[0] == 0
    assert run("concept", "context", "espresso cup", "my morning cup", "--memory", memory)[0] == 0
    code, out = run("concept", "show", "espresso cup", "--memory", memory, "--out", tmp_path / "views")
    assert code == 0 and len(list((tmp_path / "views").glob("*.png"))) == 1
    code, out = run("concept", "list", "--memory", memory)
    assert code == 0 and "espresso cup" in out and "my morning cup" in out
    assert run("concept", "remove", "espresso cup", "--memory", memory)[0] == 0
    assert [c["name"] for c in json.loads(run("concept", "list", "--memory", memory, "--json")[1])["concepts"]] == [
        "motorbike"
    ]


def test_detect_on_images(memory: Path, photos: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["detect", str(photos["motorcycle_right"]), "--memory", str(memory), "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)  # one JSON object per image
    assert line["image"] == str(photos["motorcycle_right"]) and set(line["best_scores"]) == {"motorbike"}
    (det,) = line["detections"]
    assert det["concept"] == "motorbike" and len(det["box"]) == 4 and det["score"] >= 0.56
    code, out = run("detect", photos["astronaut"], "--memory", memory, "--draw", tmp_path / "a.png")
    assert code == 0 and "no concept found" in out and (tmp_path / "a.png").is_file()
    code, out = run("detect", photos["motorcycle_right"], "--memory", memory, "--draw", tmp_path / "m.png")
    assert code == 0 and out.startswith("motorbike: box ")
    assert Image.open(tmp_path / "m.png").size == Image.open(photos["motorcycle_right"]).size


def test_eval_recognition_on_a_concept_folder(photos: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "dataset" / "motorbike"
    for sub, names in (("references", ["motorcycle_left"]), ("positives", ["motorcycle_right"])):
        (root / sub).mkdir(parents=True)
        for n in names:
            (root / sub / f"{n}.jpg").write_bytes(photos[n].read_bytes())
    (root / "negatives" / "other").mkdir(parents=True)
    for n in ("astronaut", "rocket"):
        (root / "negatives" / "other" / f"{n}.jpg").write_bytes(photos[n].read_bytes())
    atomic_write_json(root / "boxes.json", {"references/motorcycle_left.jpg": MOTORBIKE_BOX.as_list()})
    out_json, plot = tmp_path / "rec.json", tmp_path / "sweep.png"
    code, out = run(
        "eval-recognition", "--dataset", tmp_path / "dataset", "--memory", tmp_path / "mem",
        "--out", out_json, "--plot", plot,
    )  # fmt: skip
    assert code == 0, out
    assert "added 'motorbike' from 1 reference view" in out and "best tau" in out
    result = json.loads(out_json.read_text())
    mean = result["metrics"]["mean"]
    assert mean["positive_accuracy"] == 1.0 and mean["negative_accuracy_other"] == 1.0
    assert len(result["scores"]) == 3 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["concept", "add", "x", "{img}", "{img}", "--box", "1,2,3,4"], "2 images and 1 --box"),
        (["concept", "add", "motorbike", "{img}", "--box", "90,70,690,450"], "pass --replace"),
        (["concept", "add", "x", "{img}", "--box", "1,2,3"], "four numbers"),
        (["concept", "add", "x", "{img}", "--box", "0,0,5000,40"], "outside the 741x500 image"),
        (["concept", "remove", "nobody"], "no concept 'nobody'"),
        (["concept", "rename", "motorbike", " "], "non-empty"),
        (["detect", "{tmp}/missing.jpg"], "not found"),
        (["ask", "{img}", "Whose is it?", "--backend", "hf"], "--backend hf needs --model"),
        (["ask", "{img}", "Whose is it?", "--base-url", "http://127.0.0.1:9/v1"], "focuskit serve-vlm"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    memory: Path, photos: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(img=photos["motorcycle_left"], tmp=tmp_path) for a in args]
    code, out = run(*filled, "--memory", memory)
    assert code == 2, out
    last = out.strip().splitlines()[-1]  # progress bars may precede it on stderr
    assert last.startswith("focuskit: error:") and message in last, out


def test_commands_on_a_missing_memory(tmp_path: Path) -> None:
    code, out = run("concept", "list", "--memory", tmp_path / "none")
    assert code == 2 and "no concept memory" in out
