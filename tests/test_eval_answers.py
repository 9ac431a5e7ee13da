"""`focuskit eval-answers` end to end against a real `focuskit serve-vlm` process (the tiny model answers and
judges: the numbers mean nothing, the plumbing, parsing, caching and resume are what is tested), plus the answer
cache, the detection cache, the results file and the command's bad-input errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_answers_scoring import _tiny_clip
from typer.testing import CliRunner

from focuskit.backends.base import GenerationOptions
from focuskit.backends.cache import CachedBackend, KeyValueCache
from focuskit.cli.main import app
from focuskit.core.detections import Detections
from focuskit.core.errors import DatasetError
from focuskit.data.qa import QAItem
from focuskit.eval.answers import CachedDetector, ResultsFile, oracle_question, prompt_question
from focuskit.personalize.prompting import PromptTemplate
from focuskit.personalize.samples import sample_photos, write_sample_video

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`focuskit serve-vlm --model tiny` as a real process on loopback; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "focuskit.cli.main", "serve-vlm", "--model", "tiny", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not come up in 120 s")
            time.sleep(0.3)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def write_yollava(root: Path) -> Path:
    """A Yo'LLaVA checkout in its own layout, on real photos: two concepts, two MC questions and one open one."""
    photos = sample_photos()
    data = root / "yollava-data"
    for concept, train, test in (("bo", "motorcycle_left", "motorcycle_right"), ("cup", "coffee", "coffee")):
        (data / "train" / concept).mkdir(parents=True)
        (data / "test" / concept).mkdir(parents=True)
        photos[train].save(data / "train" / concept / "0.png")
        photos[test].save(data / "test" / concept / "0.png")
    qa = {
        "bo": {
            "./yollava-data/test/bo/0.png": {"question": "What color is <sks>?", "options": {"A": "Red", "B": "Green"},
                                             "correct_answer": "A"},
            "./yollava-data/train/bo/0.png": {"question": "Where is <sks>?", "answer": "On a street"},
        },
        "cup": {
            "./yollava-data/test/cup/0.png": {"question": "What is in <sks>?",
                                              "options": {"A": "Coffee", "B": "Soup"}, "correct_answer": "A"},
        },
    }  # fmt: skip
    f = data / "yollava-visual-qa.json"
    f.write_text(json.dumps(qa, indent=4))
    return f


def test_eval_answers_end_to_end_resume_and_rejudge(server: str, tmp_path: Path) -> None:
    qa = write_yollava(tmp_path / "YoLLaVA")
    out = tmp_path / "out"
    common = ("eval-answers", "--qa", qa, "-f", "yollava-vqa", "--out", out, "--memory", tmp_path / "mem",
              "--base-url", server, "--model", "focuskit", "--max-new-tokens", "4", "--no-progress")  # fmt: skip

    code, text = run(*common, "--limit", "2")  # the concepts are added from yollava-data/train on the way
    assert code == 0, text
    assert "added bo" in text and "added cup" in text and "6 answer(s) new, 0 resumed" in text
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["mode"], r["kind"]) for r in records[:3]] == [("plain", "choice"), ("pekit", "choice"),
                                                             ("oracle", "choice")]  # fmt: skip
    plain, pekit, oracle = records[:3]
    assert plain["prompt"] == "What color is bo?\nA. Red\nB. Green\n" + prompt_question_suffix()
    assert 'called "bo"' in pekit["prompt"] and pekit["detected"] == ["bo"] and pekit["recognized"] is True
    assert oracle["prompt"].startswith('This image shows "bo".') and "detected" not in oracle
    judged = [r for r in records if r["kind"] == "open"]
    assert len(judged) == 3 and all(r["judge"] == f"openai:focuskit@{server}" for r in judged)
    assert all(isinstance(r["judge_output"], str) and r["score"] in (0, 1) for r in judged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_cache"] == {"hits": 0, "misses": 6} and summary["judge_cache"] == {"hits": 0, "misses": 3}
    assert summary["detections"]["runs"] == 2  # two distinct images, detected once each
    assert summary["summary"]["plain"]["choice"]["n"] == 1 and len(summary["summary"]["plain"]["choice"]["ci95"]) == 2
    assert Image.open(out / "summary.png").format == "PNG"

    with (out / "results.jsonl").open("a") as fh:
        fh.write('{"id": "torn')  # an interrupted write: dropped on the next open
    code, text = run(*common)  # resume: only the third item is new
    assert code == 0, text
    assert "3 answer(s) new, 6 resumed" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_cache"] == {"hits": 0, "misses": 3} and summary["detections"]["runs"] == 1

    code, text = run(*common, "--judge-model", "another-judge")  # a new judge: no new answers, only new verdicts
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 3 and summary["resumed"] == 6
    assert summary["answer_cache"] == {"hits": 3, "misses": 0} and summary["judge_cache"] == {"hits": 0, "misses": 3}
    assert summary["judge"] == f"openai:another-judge@{server}"
    assert summary["summary"]["pekit"]["open"]["judges"] == [f"openai:another-judge@{server}"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 12


def prompt_question_suffix() -> str:
    return prompt_question(
        QAItem("x", "choice", Path("a.png"), ("bo",), "q", options={"A": "a", "B": "b"}, correct="A")
    ).split("\n")[-1]


def test_eval_answers_captions_and_video_without_memory(server: str, tmp_path: Path) -> None:
    """Captioning recall + CLIPScore (tiny random CLIP) and an open question about a video, plain and oracle."""
    photos = sample_photos()
    photos["chelsea"].save(tmp_path / "cat.png")
    write_sample_video(tmp_path / "ride.mp4", frames=4)
    lines = [
        {"id": "cap", "image": "cat.png", "concepts": ["Chelsea"], "kind": "caption", "aliases": {"Chelsea": ["Chel"]}},
        {"id": "vid", "video": "ride.mp4", "concepts": ["bo"], "question": "What is bo doing?", "answer": "Riding"},
    ]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    clip = _tiny_clip(tmp_path / "clip")
    code, text = run(
        "eval-answers", "--qa", tmp_path / "qa.jsonl", "-f", "qa-jsonl", "--out", tmp_path / "out", "--modes",
        "plain,oracle", "--base-url", server, "--max-new-tokens", "4", "--clip-model", clip, "--no-progress",
    )  # fmt: skip
    assert code == 0, text
    records = {(r["id"], r["mode"]): r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").open())}
    assert set(records) == {("cap", "plain"), ("cap", "oracle"), ("vid", "plain"), ("vid", "oracle")}
    cap = records[("cap", "oracle")]
    assert cap["prompt"].startswith('This image shows "Chelsea".') and "Please caption this image." in cap["prompt"]
    assert 0.0 <= cap["clipscore"] <= 2.5 and cap["named"] in ([], ["Chelsea"])
    assert records[("vid", "oracle")]["prompt"].startswith('This video shows "bo".')
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["summary"]
    assert summary["oracle"]["caption"]["clipscore"] is not None and "pekit" not in summary


class _Counting:
    name, supports_video = "fake:model", False

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, images: Sequence[Image.Image], prompt: str, *, options=None, video=False) -> str:
        self.calls += 1
        return f"answer {self.calls}"


def test_answer_cache_keys_on_model_prompt_pixels_and_options(tmp_path: Path) -> None:
    inner = _Counting()
    cache = KeyValueCache(tmp_path / "c.sqlite")
    b = CachedBackend(inner, cache)
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    assert b.generate([red], "q") == b.generate([red.copy()], "q") == "answer 1"  # same pixels: one call
    assert b.generate([blue], "q") == "answer 2" and b.generate([red], "other q") == "answer 3"
    assert b.generate([red], "q", options=GenerationOptions(max_new_tokens=3)) == "answer 4"
    again = CachedBackend(inner, KeyValueCache(tmp_path / "c.sqlite"))  # a new process: still cached
    assert again.generate([red], "q") == "answer 1" and (again.hits, again.misses) == (1, 0)
    assert (b.hits, b.misses) == (1, 4) and inner.calls == 4


def test_detection_runs_once_per_image(tmp_path: Path) -> None:
    class Once:
        memory = None

        def __init__(self) -> None:
            self.calls = 0

        def detect(self, image, concepts=None) -> Detections:
            self.calls += 1
            return Detections(np.array([[1.0, 2.0, 5.0, 6.0]]), np.array([0.9]), ["bo"])

        def concept_scores(self, image, concepts=None) -> dict[str, float]:
            return {}

    inner = Once()
    store = KeyValueCache(tmp_path / "c.sqlite", table="detections")
    det = CachedDetector(inner, signature="mem@1", store=store)
    img = Image.new("RGB", (10, 10))
    assert det.detect(img).names == ["bo"] and det.detect(img.copy()).names == ["bo"] and inner.calls == 1
    fresh = CachedDetector(inner, signature="mem@1", store=store)  # persisted across runs
    assert fresh.detect(img).xyxy.tolist() == [[1.0, 2.0, 5.0, 6.0]] and inner.calls == 1
    assert CachedDetector(inner, signature="mem@2", store=store).detect(img) and inner.calls == 2  # memory changed


def test_results_file_drops_a_torn_tail_and_refuses_other_files(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a", "mode": "plain"}\n{"id": "b", "mo')
    rf = ResultsFile(f)
    rf.append({"id": "c", "mode": "pekit"})
    rf.close()
    assert [json.loads(x)["id"] for x in f.read_text().splitlines()] == ["a", "c"]
    f.write_text('not json\n{"id": "a", "mode": "plain"}\n')
    with pytest.raises(DatasetError, match=r"r\.jsonl:1: not valid JSON"):
        ResultsFile(f)


def test_oracle_prompt_names_context() -> None:
    class Mem:
        def __contains__(self, name: object) -> bool:
            return name == "bo"

        def context(self, name: str) -> str:
            return "my dog"

    item = QAItem("x", "open", Path("a.mp4"), ("bo", "cup"), "Who?", answer="bo")
    text = oracle_question(item, "Who?", Mem(), PromptTemplate(), "video")  # type: ignore[arg-type]
    assert text.splitlines() == ['This video shows "bo".', 'This video shows "cup".', 'About "bo": my dog',
                                 "Refer to each of these entities by its given name.", "Question: Who?"]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("--modes", "plain,best"), "modes must be a comma-separated subset"),
        (("--limit", "0"), "--limit must be >= 1"),
        (("--plot", "chart.jpg"), "--plot writes a PNG"),
        (("-f", "vqa"), "unknown QA format 'vqa'"),
        ((), "the pekit mode needs --memory"),
        (("--out-is-file",), "is a file"),
    ],
)
def test_eval_answers_bad_input(tmp_path: Path, extra: tuple[str, ...], match: str) -> None:
    qa = write_yollava(tmp_path / "YoLLaVA")
    out = tmp_path / "out"
    if extra == ("--out-is-file",):
        out.write_text("x")
        extra = ("--memory", str(tmp_path / "mem"))
    args = ["eval-answers", "--qa", qa, "-f", "yollava-vqa", "--out", out, "--base-url", "http://127.0.0.1:9/v1"]
    code, text = run(*args, *extra)
    assert code == 2 and text.startswith("focuskit: error: ") and match in text, text


def test_concepts_are_added_under_the_questions_names(tmp_path: Path) -> None:
    """This-Is-My-Img folders carry a category suffix and no apostrophe; the memory gets the questions' names."""
    from test_data_qa import write_thisismy

    from focuskit.cli.answers import _add_missing_concepts
    from focuskit.data.qa import read_qaset

    single, _ = write_thisismy(tmp_path / "This-is-My-Img")
    (tmp_path / "This-is-My-Img" / "Single-concept" / "train" / "Nikkis car-car").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "This-is-My-Img" / "Single-concept" / "train" / "Nikkis car-car" / "0.png")
    qa = read_qaset("thisismy-vqa", single)

    class Mem:
        def __init__(self) -> None:
            self.added: dict[str, list[Path]] = {}

        def __contains__(self, name: object) -> bool:
            return name in self.added

        def add(self, name: str, images: list[Path], **kwargs: object) -> None:
            self.added[name] = images

    mem = Mem()
    lines = _add_missing_concepts(mem, qa, qa.concepts_root, qa.concepts_format, qa.concepts_split)  # type: ignore[arg-type]
    assert sorted(mem.added) == ["Alex's hat", "Nikki's car"] and len(lines) == 2
    assert mem.added["Alex's hat"][0].parent.name == "Alexs hat-hat"
