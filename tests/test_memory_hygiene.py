"""Concept memory, issue 14: masks stored with views, mask re-ranking and masks in detections, view consistency and
pruning, several instances, near-miss scores, and view sources without server paths. Real photos only
(focuskit/assets/realphotos, frames of the opencv-doc cup and box videos, and scikit-image's astronaut)."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box, box_iou_batch
from focuskit.core.errors import ConfigError, MemoryStoreError
from focuskit.localizers.matching import create_matching
from focuskit.memory.store import ConceptMemory
from focuskit.memory.views import display_source
from focuskit.models.segmenters import create_segmenter
from focuskit.personalize.detector import ConceptDetector, DetectorConfig

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
CUP_VIEWS = [
    ("cup_f0010.jpg", Box(308, 122, 413, 381)),
    ("cup_f0080.jpg", Box(52, 140, 265, 419)),
    ("cup_f0140.jpg", Box(321, 149, 432, 358)),
]
CUP_QUERY = ("cup_f0035.jpg", Box(317, 114, 431, 396))
BOX_VIEW = ("box_f0000.jpg", Box(296, 17, 597, 238))


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> ConceptMemory:
    """A memory whose cup views got GrabCut masks at add time, plus a box concept without masks."""
    mem = ConceptMemory(tmp_path_factory.mktemp("hygiene") / "memory")
    seg = create_segmenter("grabcut")
    mem.add("cup", [REAL / f for f, _ in CUP_VIEWS], boxes=[b for _, b in CUP_VIEWS], segmenter=seg)
    mem.add("box", [REAL / BOX_VIEW[0]], boxes=[BOX_VIEW[1]])
    return mem


def test_masks_are_stored_with_views_and_kept_out_of_the_index(segmented: ConceptMemory) -> None:
    views = segmented.views("cup")
    assert [v.source for v in views] == [f for f, _ in CUP_VIEWS]  # file names, not paths
    for v in views:
        assert v.mask is not None and v.mask.shape == (v.image.height, v.image.width)
        x1, y1, x2, y2 = (round(c) for c in v.box.to_xyxy())
        inside = v.mask[y1:y2, x1:x2].sum()
        assert inside == v.mask.sum() and 0.2 < inside / ((x2 - x1) * (y2 - y1)) < 1.0  # a shape, not the box
    assert segmented.views("box")[0].mask is None
    info = {i.name: i for i in segmented.list()}
    emb, _ = segmented.view_embeddings("cup")
    assert info["cup"].vectors == len(emb) == 2 * len(CUP_VIEWS)  # original + zoom2.5 per view: box vectors only
    assert segmented.mask_embeddings("cup").shape == (2 * len(CUP_VIEWS), emb.shape[1])
    assert segmented.mask_embeddings("box").shape == (0, emb.shape[1])


def test_detection_with_a_segmenter_returns_masks_and_near_misses(segmented: ConceptMemory) -> None:
    detector = ConceptDetector(segmented, config=DetectorConfig(segmenter="grabcut"))
    image = Image.open(REAL / CUP_QUERY[0])
    dets = detector.detect(image)
    assert dets.names == ["cup"], dets.to_json(masks=False)
    assert dets.masks is not None and dets.masks.shape == (1, image.height, image.width)
    assert float(box_iou_batch(dets.xyxy, [CUP_QUERY[1].to_xyxy()])[0, 0]) >= 0.5
    x1, y1, x2, y2 = (round(c) for c in dets.xyxy[0])
    assert dets.masks[0].sum() > 0 and dets.masks[0][y1:y2, x1:x2].sum() == dets.masks[0].sum()
    assert np.isnan(dets.data["mask_score"]).all()  # masks only: the boxes are the box-only detector's
    (item,) = dets.to_json()
    assert set(item["mask"]) == {"size", "counts"}
    # The box concept is absent here, but its best score is reported (a near miss, below tau).
    assert set(dets.best_scores) == {"cup", "box"} and dets.best_scores["cup"] == pytest.approx(dets.scores[0])
    misses = dets.near_misses(detector.config.tau)
    assert [n for n, _ in misses] == ["box"] and misses[0][1] < detector.config.tau
    plain = ConceptDetector(segmented).detect(image)
    assert plain.masks is None and plain.best_scores == pytest.approx(dets.best_scores)  # presence by box score
    assert np.array_equal(plain.xyxy, dets.xyxy)
    reranked = ConceptDetector(segmented, config=DetectorConfig(segmenter="grabcut", mask_rerank=True)).detect(image)
    assert reranked.names == ["cup"] and np.isfinite(reranked.data["mask_score"]).all()
    assert reranked.masks is not None and reranked.masks[0].sum() > 0


def test_nothing_found_still_reports_each_concepts_best_score(segmented: ConceptMemory) -> None:
    dets = ConceptDetector(segmented).detect(REAL / "astronaut.jpg")
    assert len(dets) == 0 and set(dets.best_scores) == {"cup", "box"}
    assert all(s < 0.56 for s in dets.best_scores.values())
    assert len(dets.near_misses(0.56)) == 2


def _two_cups() -> tuple[Image.Image, list[Box]]:
    """Two real cup frames side by side: two instances of the same cup in one 1280x480 image."""
    a, b = Image.open(REAL / CUP_QUERY[0]).convert("RGB"), Image.open(REAL / "cup_f0140.jpg").convert("RGB")
    canvas = Image.new("RGB", (a.width + b.width, max(a.height, b.height)))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return canvas, [CUP_QUERY[1], Box(321 + a.width, 149, 432 + a.width, 358)]


def test_several_instances_from_the_detector_and_the_matching_localizer(segmented: ConceptMemory) -> None:
    image, truth = _two_cups()
    detector = ConceptDetector(segmented)
    one = detector.detect(image, ["cup"])
    two = detector.detect(image, ["cup"], max_instances=2)
    assert len(one) == 1 and len(two) == 2
    halves = sorted(int(c > image.width / 2) for c in (two.xyxy[:, 0] + two.xyxy[:, 2]) / 2)
    assert halves == [0, 1], two.to_json()  # one per cup, not two boxes on the same cup
    assert box_iou_batch(two.xyxy, [b.to_xyxy() for b in truth]).max(0).min() >= 0.3
    with pytest.raises(ConfigError, match="max_instances"):
        detector.detect(image, max_instances=0)
    loc = create_matching(max_instances=2)
    pred = loc.localize(segmented.supports("cup"), image)
    assert pred.box is not None and len(pred.extra_boxes) == 1
    assert len(pred.meta["extra_scores"]) == 1 and pred.meta["extra_scores"][0] <= pred.score
    centers = [(b.x1 + b.x2) / 2 > image.width / 2 for b in (pred.box, *pred.extra_boxes)]
    assert sorted(centers) == [False, True]


def test_outlier_view_is_flagged_and_pruned(tmp_path: Path) -> None:
    with ConceptMemory(tmp_path / "m") as mem:
        astronaut = Box(150, 20, 400, 500)  # someone's hand-off mistake: a view of another object
        mem.add("cup", [*(REAL / f for f, _ in CUP_VIEWS), REAL / "astronaut.jpg"],
                boxes=[*(b for _, b in CUP_VIEWS), astronaut])  # fmt: skip
        report = mem.view_consistency("cup")
        assert [r.source for r in report] == [f for f, _ in CUP_VIEWS] + ["astronaut.jpg"]
        assert [r.outlier for r in report] == [False, False, False, True], report
        assert report[3].score < min(r.score for r in report[:3]) and "below the median" in report[3].reason
        with pytest.raises(MemoryStoreError, match="no view"):
            mem.prune("cup", view_ids=[999])
        with pytest.raises(MemoryStoreError, match="remove all"):
            mem.prune("cup", view_ids=[r.view_id for r in report])
        done = mem.prune("cup", outliers=True)
        assert done.removed == [report[3].view_id] and done.kept == 3
        assert [v.source for v in mem.views("cup")] == [f for f, _ in CUP_VIEWS]
        assert mem.list()[0].vectors == 6 and len(mem.view_embeddings("cup")[0]) == 6  # index follows
        assert mem.prune("cup", view_ids=[report[0].view_id]).kept == 2
        single = mem.view_consistency("cup")
        assert len(single) == 2 and not any(r.outlier for r in single)


def test_sources_are_names_or_upload_never_paths(tmp_path: Path) -> None:
    mem_dir = tmp_path / "m"
    with ConceptMemory(mem_dir) as mem:
        mem.add("box", [REAL / BOX_VIEW[0], Image.open(REAL / "box_f0130.jpg")],
                boxes=[BOX_VIEW[1], Box(143, 42, 517, 294)])  # fmt: skip
        mem.add("box2", [REAL / BOX_VIEW[0]], boxes=[BOX_VIEW[1]], sources=["holidays/box.jpg"])
        assert [v.source for v in mem.views("box")] == ["box_f0000.jpg", "upload"]
        assert [v.source for v in mem.views("box2")] == ["holidays/box.jpg"]
    with sqlite3.connect(mem_dir / "memory.sqlite") as db:  # a memory written before: absolute paths stored
        db.execute("UPDATE views SET source = ? WHERE source = 'box_f0000.jpg'", (str(REAL / BOX_VIEW[0]),))
    with ConceptMemory(mem_dir) as mem:
        assert mem.views("box")[0].source == "box_f0000.jpg"
        assert mem.view_consistency("box")[0].source == "box_f0000.jpg"
    assert display_source("/srv/data/x.jpg") == "x.jpg" and display_source("a/b.jpg") == "a/b.jpg"


def test_add_progress_bar_counts_the_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar of `concept add` must not reach 100% before the encoder has run (issue 16): record its count at
    every encoder call and at the end."""
    import focuskit.memory.views as views
    from focuskit.models.encoders import create_encoder

    bars: list[Any] = []
    real_tqdm = views.tqdm

    def recording_tqdm(*args: Any, **kwargs: Any) -> Any:
        bars.append(real_tqdm(*args, **{**kwargs, "disable": False, "file": io.StringIO()}))
        return bars[-1]

    monkeypatch.setattr(views, "tqdm", recording_tqdm)
    real = create_encoder("mobilenetv2", layer="s16", parts=3)
    seen: list[tuple[int, int]] = []

    class Watched:
        name, dim, stride = real.name, real.dim, real.stride

        def encode(self, image: Any) -> Any:
            seen.append((bars[-1].n, bars[-1].total))
            return real.encode(image)

    with ConceptMemory(tmp_path / "m", encoder=Watched()) as mem:  # type: ignore[arg-type]
        mem.add("cup", [REAL / f for f, _ in CUP_VIEWS], boxes=[b for _, b in CUP_VIEWS], progress=True)
    assert seen and all(n < total for n, total in seen)  # encoding happens while the bar is short of 100%
    assert bars[-1].n == bars[-1].total == 3 * len(CUP_VIEWS)  # load, encode, embed per view
