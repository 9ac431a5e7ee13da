"""Exports: JSONL, CSV, COCO JSON (opened with pycocotools' COCO reader) and FiftyOne JSON from one batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError, FocusError
from focuskit.core.masks import box_to_mask, decode_rle
from focuskit.exports import ImageResult, format_for, write_detections


def disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def batch(masks: bool = True) -> list[ImageResult]:
    m1 = np.stack([disk(30, 40, 10, 10, 6), box_to_mask([20, 10, 35, 28], (40, 30))])
    d1 = Detections([[4, 4, 17, 17], [20, 10, 35, 28]], [0.91, 0.66], ["mug", "dog"], masks=m1 if masks else None)
    m2 = disk(20, 25, 12, 10, 5)[None]
    d2 = Detections([[7, 5, 18, 16]], [0.8], ["mug"], masks=m2 if masks else None)
    return [
        ImageResult("a.jpg", 40, 30, d1, {"mug": 0.91, "dog": 0.66}),
        ImageResult("b.jpg", 25, 20, d2, {"mug": 0.8, "dog": 0.41}),
        ImageResult("c.jpg", 10, 10, Detections.empty(), {"mug": 0.59, "dog": float("-inf")}),
    ]


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [("x.jsonl", None, "jsonl"), ("x.CSV", None, "csv"), ("x.json", None, "coco"), ("x.json", "fiftyone", "fiftyone")],
)
def test_format_for(name, fmt, expected) -> None:
    assert format_for(name, fmt) == expected


@pytest.mark.parametrize(("name", "fmt", "error"), [("x.txt", None, "cannot tell"), ("x.json", "yolo", "unknown")])
def test_format_for_errors(name, fmt, error) -> None:
    with pytest.raises(ConfigError, match=error):
        format_for(name, fmt)


def test_coco_export_opens_in_pycocotools(tmp_path: Path) -> None:
    coco_mod = pytest.importorskip("pycocotools.coco")
    results = batch()
    path = write_detections(results, tmp_path / "out.json")
    coco = coco_mod.COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["mug", "dog"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["category_id"] for a in anns] == [1, 2]
    assert anns[0]["bbox"] == [4.0, 4.0, 13.0, 13.0] and anns[0]["score"] == 0.91
    assert np.array_equal(coco.annToMask(anns[0]).astype(bool), results[0].detections.masks[0])
    (b_ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert np.array_equal(coco.annToMask(b_ann).astype(bool), results[1].detections.masks[0])
    assert coco.getAnnIds(imgIds=[3]) == []
    assert coco.loadImgs([3])[0]["focuskit_best_scores"] == {"mug": 0.59, "dog": None}


def test_coco_export_scores_perfectly_against_itself(tmp_path: Path) -> None:
    """The export is valid both as ground truth and as results for COCOeval (segm AP of a copy of itself = 1)."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    path = write_detections(batch(), tmp_path / "out.json")
    gt = coco_mod.COCO(str(path))
    dt = gt.loadRes(json.loads(path.read_text())["annotations"])
    ev = cocoeval.COCOeval(gt, dt, "segm")
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_jsonl_export(tmp_path: Path) -> None:
    path = write_detections(batch(), tmp_path / "out.jsonl", concepts=["dog", "mug"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["image"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg"]
    first = rows[0]["detections"][0]
    assert first["concept"] == "mug" and first["concept_id"] == 1 and first["box"] == [4, 4, 17, 17]
    assert np.array_equal(decode_rle(first["mask"]), batch()[0].detections.masks[0])
    assert rows[2] == {"image": "c.jpg", "width": 10, "height": 10, "detections": [],
                       "best_scores": {"mug": 0.59, "dog": None}}  # fmt: skip


def test_csv_export(tmp_path: Path) -> None:
    path = write_detections(batch(), tmp_path / "out.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["a.jpg", "a.jpg", "b.jpg", "c.jpg"]
    assert rows[1]["concept"] == "dog" and rows[1]["concept_id"] == "1" and rows[1]["x2"] == "35.0"
    rle = {"size": [30, 40], "counts": rows[0]["mask_rle"]}
    assert np.array_equal(decode_rle(rle), batch()[0].detections.masks[0])
    assert rows[3]["concept"] == "" and rows[3]["mask_rle"] == ""
    no_masks = write_detections(batch(masks=False), tmp_path / "plain.csv")
    assert all(r["mask_rle"] == "" for r in csv.DictReader(no_masks.open(newline="")))


def test_fiftyone_export(tmp_path: Path) -> None:
    path = write_detections(batch(), tmp_path / "fo.json", format="fiftyone")
    rows = json.loads(path.read_text())
    assert rows[0]["filepath"] == "a.jpg"
    assert rows[0]["detections"][1]["bounding_box"] == pytest.approx([0.5, 1 / 3, 15 / 40, 0.6])
    assert rows[2]["detections"] == []


def test_export_validation(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match="'dog' is not in the concept list"):
        write_detections(batch(), tmp_path / "x.jsonl", concepts=["mug"])
    d = Detections([[0, 0, 2, 2]], [0.5], ["mug"], masks=np.ones((1, 5, 5), dtype=bool))
    with pytest.raises(FocusError, match="masks are 5x5 but the image is 8x5"):
        ImageResult("x.jpg", 8, 5, d)
    assert not (tmp_path / "x.jsonl").exists()
