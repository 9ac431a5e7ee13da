"""CLI, issues 14 and 16: `detect`/`ask` over files, folders and globs with one model load; exports (COCO read back
by pycocotools, CSV, JSONL); `--draw-dir`; `--max-instances`; masks; near misses; `--verbose` prompts; argument
checks before any model loads. Real photos: frames of the opencv-doc cup and box videos in focuskit/assets/realphotos
and scikit-image's astronaut."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import focuskit.models.encoders as encoders
from focuskit.cli.main import app

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
CUP_VIEWS = [("cup_f0010.jpg", "308,122,413,381"), ("cup_f0080.jpg", "52,140,265,419")]
runner = CliRunner()


def run(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mem = tmp_path_factory.mktemp("batch") / "memory"
    args = ["concept", "add", "cup", *(REAL / f for f, _ in CUP_VIEWS), "-m", mem, "--segment"]
    for _, b in CUP_VIEWS:
        args += ["--box", b]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count("with mask") == 2
    result = run("concept", "add", "box", REAL / "box_f0000.jpg", "--box", "296,17,597,238", "-m", mem)
    assert result.exit_code == 0, result.output
    return mem


@pytest.fixture
def encoder_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the encoders built during the test (each build is a model load)."""
    built: list[str] = []
    depth = [0]
    original = encoders.create_encoder

    def counting(name: str = "mobilenetv2", **kwargs: Any) -> Any:
        if depth[0] == 0:  # the parts encoder builds its backbone inside: one load
            built.append(name)
        depth[0] += 1
        try:
            return original(name, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(encoders, "create_encoder", counting)
    return built


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("queries")
    for name in ("cup_f0035.jpg", "astronaut.jpg"):
        shutil.copy(REAL / name, folder / name)
    return folder


def test_batch_detect_writes_coco_that_pycocotools_reads(
    memory: Path, queries: Path, tmp_path: Path, encoder_builds: list[str]
) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out, drawn = tmp_path / "results.json", tmp_path / "drawn"
    result = run("detect", queries, str(REAL / "box_f004*.jpg"), "-m", memory, "--segment", "--out", out,
                 "--draw-dir", drawn)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(encoder_builds) == 1  # one model load for the three images
    coco = COCO(str(out))
    files = [img["file_name"] for img in coco.loadImgs(coco.getImgIds())]
    assert [Path(f).name for f in files] == ["astronaut.jpg", "cup_f0035.jpg", "box_f0045.jpg"]
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"cup", "box"}
    by_file = {Path(coco.imgs[a["image_id"]]["file_name"]).name: a for a in coco.loadAnns(coco.getAnnIds())}
    assert set(by_file) == {"cup_f0035.jpg", "box_f0045.jpg"}
    cup = by_file["cup_f0035.jpg"]
    assert coco.cats[cup["category_id"]]["name"] == "cup" and cup["score"] >= 0.56
    x, y, w, h = cup["bbox"]
    assert abs(x - 317) < 40 and abs(x + w - 431) < 40 and abs(y - 114) < 60  # the true box: 317,114,431,396
    mask = mask_utils.decode(cup["segmentation"])
    assert mask.shape == (480, 640) and mask.sum() == cup["area"] and 0.3 < mask.sum() / (w * h) < 1.0
    astronaut = next(i for i in coco.imgs.values() if i["file_name"].endswith("astronaut.jpg"))
    assert set(astronaut["focuskit_best_scores"]) == {"cup", "box"}  # near misses of an image with no detection
    assert all(s is None or s < 0.56 for s in astronaut["focuskit_best_scores"].values())
    assert sorted(p.name for p in drawn.iterdir()) == ["astronaut.jpg", "box_f0045.jpg", "cup_f0035.jpg"]
    assert Image.open(drawn / "cup_f0035.jpg").size == (640, 480)
    assert "near misses:" in result.output and "astronaut.jpg: no concept found" in result.output


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_batch_detect_csv_and_jsonl(memory: Path, queries: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"r{suffix}"
    result = run("detect", queries, "-m", memory, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines] == ["astronaut.jpg", "cup_f0035.jpg"]
    assert lines[0]["detections"] == [] and set(lines[0]["best_scores"]) == {"cup", "box"}
    assert [d["concept"] for d in lines[1]["detections"]] == ["cup"] and "mask" not in lines[1]["detections"][0]
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert [Path(r["image"]).name for r in rows] == ["astronaut.jpg", "cup_f0035.jpg"]
        assert rows[0]["concept"] == "" and rows[1]["concept"] == "cup" and float(rows[1]["score"]) >= 0.56
    else:
        assert [json.loads(line) for line in out.read_text().splitlines()] == lines


def _two_cups(path: Path) -> Path:
    a, b = Image.open(REAL / "cup_f0035.jpg").convert("RGB"), Image.open(REAL / "cup_f0140.jpg").convert("RGB")
    canvas = Image.new("RGB", (1280, 480))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (640, 0))
    canvas.save(path)
    return path


def test_max_instances_for_detect_and_localize(memory: Path, tmp_path: Path) -> None:
    image = _two_cups(tmp_path / "two.png")
    result = run("detect", image, "-m", memory, "--json", "--max-instances", "2")
    two = json.loads(result.stdout)["detections"]
    assert len(two) == 2, result.output  # (one by default: test_memory_hygiene.py)
    assert sorted((d["box"][0] + d["box"][2]) / 2 > 640 for d in two) == [False, True]  # one box per cup
    result = run("localize", "--query", image, "--support", REAL / CUP_VIEWS[0][0], "--box", CUP_VIEWS[0][1],
                 "--max-instances", "2", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    loc = json.loads(result.stdout)
    assert len(loc["instances"]) == 2 and loc["instances"][0]["box"] == loc["box"]
    assert sorted((i["box"][0] + i["box"][2]) / 2 > 640 for i in loc["instances"]) == [False, True]


class RecordingBackend:
    name = "recording"
    supports_video = False

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def generate(self, images: Any, prompt: str, *, options: Any = None, video: bool = False) -> str:
        self.calls.append((len(images), prompt))
        return f"answer {len(self.calls)}"


def test_ask_batch_verbose_prints_the_prompt_and_the_prompted_image(
    memory: Path, queries: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder_builds: list[str]
) -> None:
    backend = RecordingBackend()
    monkeypatch.setattr("focuskit.cli.personalize.make_backend", lambda *a, **k: backend)
    out = tmp_path / "answers.jsonl"
    result = run("ask", queries, "Where is my cup?", "-m", memory, "--backend", "hf", "--model", "x", "--verbose",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(encoder_builds) == 1 and len(backend.calls) == 2
    personalized = backend.calls[1][1]
    assert 'the entity enclosed in the red box is called "cup"' in personalized
    assert personalized in result.output  # the exact prompt sent, shown
    assert backend.calls[0][1] == "Where is my cup?" in result.output  # nothing found: asked as is
    shown = [line.split("prompted image: ", 1)[1] for line in result.output.splitlines() if "prompted image: " in line]
    assert len(shown) == 2 and all(Path(p).is_file() for p in shown)
    assert Image.open(shown[1]).size == (640, 480)
    assert "near misses: cup" in result.output  # the astronaut photo: why it was not personalized
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["answer"] for line in lines] == ["answer 1", "answer 2"] and lines[1]["prompt"] == personalized
    assert f"{queries / 'cup_f0035.jpg'}: answer 2" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["detect", "{q}", "--out", "{tmp}/r.txt"], "cannot tell the export format"),
        (["detect", "{q}", "--draw", "{tmp}/d.png"], "--draw-dir"),
        (["detect", "{tmp}/empty"], "has no images"),
        (["detect", "{tmp}/nothing*.jpg"], "matches no images"),
        (["detect", "{q}", "--max-instances", "0"], "max-instances"),
        (["ask", "{q}", "  ", "--backend", "hf", "--model", "tiny"], "the question is empty"),
        (["ask", "{q}", "Where?", "--base-url", "http://127.0.0.1:{port}/v1"], "focuskit serve-vlm"),
        (["ask", "{q}", "Where?", "--base-url", "http://127.0.0.1:{port}/v1"], "--backend hf"),
        (["concept", "add", "cup", "{q}/cup_f0035.jpg"], "--replace"),
        (["concept", "add", "x", "{q}", "--box", "1,2,3,4"], "2 images and 1 --box"),
        (["concept", "add", "x", "{q}/cup_f0035.jpg", "--mask", "{tmp}/none.png"], "not found"),
        (["concept", "prune", "cup"], "--outliers"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(
    memory: Path, queries: Path, tmp_path: Path, encoder_builds: list[str], args: list[str], message: str
) -> None:
    import socket

    (tmp_path / "empty").mkdir()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    filled = [a.format(q=queries, tmp=tmp_path, port=port) for a in args]
    result = run(*filled, "--memory", memory)
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("focuskit: error:") and message in last, result.output
    assert encoder_builds == []


def test_concept_add_mask_png_folder_prune_and_show(tmp_path: Path) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    for name in ("cup_f0080.jpg", "cup_f0140.jpg", "cup_f0195.jpg", "astronaut.jpg"):
        shutil.copy(REAL / name, folder / name)
    boxes = {"astronaut.jpg": "150,20,400,500", "cup_f0080.jpg": "52,140,265,419", "cup_f0140.jpg": "321,149,432,358",
             "cup_f0195.jpg": "258,103,379,401"}  # fmt: skip
    mask = np.zeros((480, 640), dtype=np.uint8)
    mask[150:410, 70:250] = 255  # a mask PNG for the first cup view
    Image.fromarray(mask).save(tmp_path / "mask.png")
    mem = tmp_path / "m"
    args = ["concept", "add", "cup", folder, "-m", mem]  # a folder: its images in name order
    for name in sorted(boxes):
        args += ["--box", boxes[name]]
    args += ["--mask", "none", "--mask", tmp_path / "mask.png", "--mask", "none", "--mask", "none"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "view 2 (cup_f0080.jpg): box 70,150,250,410, from mask, with mask" in result.output
    assert "warning: view 1 (astronaut.jpg) looks unlike the others" in result.output
    shown = json.loads(run("concept", "show", "cup", "-m", mem, "--json").stdout)
    assert [v["source"] for v in shown["views"]] == sorted(boxes)  # file names only
    assert [v["outlier"] for v in shown["views"]] == [True, False, False, False]
    table = run("concept", "show", "cup", "-m", mem, "--out", tmp_path / "views")
    assert "concept prune 'cup'" in table.output and len(list((tmp_path / "views").glob("*.png"))) == 4
    result = run("concept", "prune", "cup", "-m", mem, "--outliers", "--dry-run")
    assert "would drop 1 view(s)" in result.output and "astronaut.jpg" in result.output
    result = run("concept", "prune", "cup", "-m", mem, "--outliers")
    assert result.exit_code == 0 and "dropped 1 view(s) of 'cup'" in result.output and "3 left" in result.output
    assert len(json.loads(run("concept", "show", "cup", "-m", mem, "--json").stdout)["views"]) == 3


def test_tables_are_not_cut_when_piped(memory: Path) -> None:
    context = "my grey travel mug with the dented lid, usually on the desk next to the window in the study " * 2
    assert run("concept", "context", "box", context.strip(), "-m", memory).exit_code == 0
    result = run("concept", "list", "-m", memory)  # CliRunner's stdout is not a terminal, as when piped
    assert context.strip() in result.stdout.replace("\n", "") and context.strip() in result.stdout
