"""One matcher, four surfaces: `focuskit localize`, `focuskit detect`, `focuskit library search` and the HTTP API
give the same box and score for the same concept (its stored views as supports) and the same photo. `localize` and
`detect` (CLI and HTTP) then refine that box's edges by default (`MatcherConfig.refine_top`), the same way; library
search answers the stored proposal (it keeps no feature map to refine on), which is the unrefined answer."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.core.box import Box, iou
from focuskit.matcher import MatcherConfig, RegionMatcher
from focuskit.memory.store import ConceptMemory
from focuskit.server import ServerSettings, create_app

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
QUERY = "box_f0310.jpg"
TEACH = ("box_f0000.jpg", Box(296.0, 14.0, 597.0, 242.0))
runner = CliRunner()


def _cli(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("agree")
    lib = tmp / "library"
    lib.mkdir()
    shutil.copy(REAL / QUERY, lib / QUERY)
    memory = tmp / "memory"
    with ConceptMemory(memory) as mem:
        mem.add("box", [REAL / TEACH[0]], boxes=[TEACH[1]], progress=False)
        # The concept's stored views are the supports of `localize` (same pixels, lossless PNG).
        support = mem.supports("box")[0]
    support.image.save(tmp / "support.png")  # type: ignore[union-attr]
    (tmp / "support.box").write_text(",".join(f"{v:.4f}" for v in support.box.as_list()))
    return {"tmp": tmp, "lib": lib, "memory": memory}


def _close(a: tuple[Box, float], b: tuple[Box, float], what: str) -> None:
    assert iou(a[0], b[0]) > 0.999, f"{what}: box {b[0]} differs from {a[0]}"
    assert abs(a[1] - b[1]) < 2e-3, f"{what}: score {b[1]} differs from {a[1]}"  # library vectors are float16


def test_every_surface_gives_the_same_box_and_score(setup: dict[str, Path]) -> None:
    tmp, lib, memory = setup["tmp"], setup["lib"], setup["memory"]
    query = lib / QUERY
    unrefined = tmp / "unrefined.yaml"
    unrefined.write_text("refine_top: 0\n")
    args = ("localize", "--query", query, "--support", tmp / "support.png", "--box", (tmp / "support.box").read_text())
    loc = json.loads(_cli(*args, "--config", unrefined, "--json"))
    assert loc["box"] is not None, loc
    ref = (Box(*loc["box"]), float(loc["score"]))
    # By default `localize` and `detect` also refine the winning proposal's edges (MatcherConfig.refine_top); library
    # search answers the proposal itself. The refined answer is found whenever the proposal is, scores at least as
    # high, and stays on the same object.
    refined = json.loads(_cli(*args, "--json"))
    assert refined["box"] is not None and float(refined["score"]) >= ref[1] - 1e-4
    assert iou(Box(*refined["box"]), ref[0]) > 0.5
    fit = (Box(*refined["box"]), float(refined["score"]))

    dets = json.loads(_cli("detect", query, "--memory", memory, "--json"))
    det = next(d for d in dets["detections"] if d["concept"] == "box") if isinstance(dets, dict) else dets[0]
    _close(fit, (Box(*det["box"]), float(det["score"])), "detect")
    (tmp / "unrefined_pekit.yaml").write_text("detector:\n  refine: false\n")
    off = json.loads(_cli("detect", query, "--memory", memory, "--json", "--config", tmp / "unrefined_pekit.yaml"))
    det = next(d for d in off["detections"] if d["concept"] == "box") if isinstance(off, dict) else off[0]
    _close(ref, (Box(*det["box"]), float(det["score"])), "detect, refinement off")

    _cli("library", "index", lib, "--memory", memory, "--json")
    hits = json.loads(_cli("library", "search", "box", "--memory", memory, "--json"))
    assert hits and hits[0]["path"] == QUERY
    _close(ref, (Box(*hits[0]["boxes"][0]), float(hits[0]["scores"][0])), "library search")

    settings = ServerSettings(memory_dir=memory, library_dir=lib, index_on_start=False, state_dir=tmp / "server")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", headers={"X-Focuskit": "1"}) as client:
        files = [("query", (QUERY, query.read_bytes(), "image/jpeg"))]
        r = client.post("/localize", data={"concept": "box"}, files=files)
        assert r.status_code == 200, r.text
        _close((Box(*refined["box"]), float(refined["score"])), (Box(*r.json()["box"]), float(r.json()["score"])),
               "HTTP /localize")  # fmt: skip
        r = client.post("/detect", files=[("image", (QUERY, query.read_bytes(), "image/jpeg"))])
        assert r.status_code == 200, r.text
        d = r.json()["detections"][0]
        _close(fit, (Box(*d["box"]), float(d["score"])), "HTTP /detect")
        assert client.post("/library/index").status_code == 202
        for _ in range(600):
            job = client.get("/library/status").json()["indexing"]
            if job["state"] != "running":
                break
            time.sleep(0.1)
        assert job["state"] == "done", job
        r = client.get("/library/search", params={"concept": "box"})
        assert r.status_code == 200, r.text
        hit = r.json()["hits"][0]
        _close(ref, (Box(*hit["boxes"][0]), float(hit["scores"][0])), "HTTP /library/search")


def test_one_default_configuration() -> None:
    """The surfaces' defaults are the matcher's: nothing to keep in sync by hand."""
    from focuskit.library import LibraryConfig
    from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer
    from focuskit.memory.store import default_encoder_spec
    from focuskit.personalize.detector import DetectorConfig

    m, lib, loc = MatcherConfig(), LibraryConfig(), MatchingConfig()
    spec = default_encoder_spec()
    assert (spec.name, spec.options) == (m.encoder, m.encoder_options) == (loc.encoder, loc.encoder_options)
    assert lib.proposers == m.proposers and lib.proposer_options == m.proposer_options
    assert lib.max_proposals == m.max_proposals == loc.max_proposals
    assert DetectorConfig().tau == lib.tau
    assert MatchingLocalizer.matcher_config(loc).proposers == m.proposers
    assert RegionMatcher(m, encoder=lambda: None).config.tau is None  # type: ignore[arg-type,return-value]


def test_detect_refines_like_localize(tmp_path: Path) -> None:
    """A loose proposal (a motorcycle's part, seen from the other camera of a stereo pair) is refined by `localize`
    and by `detect` to the same box and score; with refinement off both answer the same proposal."""
    from focuskit.localizers.matching import MatchingConfig, MatchingLocalizer
    from focuskit.personalize.config import DetectorConfig
    from focuskit.personalize.detector import ConceptDetector

    with ConceptMemory(tmp_path / "m") as mem:
        mem.add("part", [REAL / "moto_left.jpg"], boxes=[Box(345.5, 50.1, 361.9, 79.5)], progress=False)
        supports, query = mem.supports("part"), REAL / "moto_right.jpg"
        answers = {}
        for refine in (True, False):
            pred = MatchingLocalizer(MatchingConfig(refine_top=1 if refine else 0)).localize(supports, query)
            det = ConceptDetector(mem, config=DetectorConfig(refine=refine)).detect(query)
            assert pred.box is not None and len(det) == 1
            _close((pred.box, pred.score), (Box(*det.xyxy[0]), float(det.scores[0])), f"detect, refine={refine}")
            answers[refine] = (pred.box, pred.score)
    assert answers[True][1] > answers[False][1] + 0.04 and iou(answers[True][0], answers[False][0]) < 0.9
