"""`Detections`: alignment, masks carried through indexing and NMS, several instances, supervision and FiftyOne."""

from __future__ import annotations

import numpy as np
import pytest

from focuskit.core.detections import Detections
from focuskit.core.errors import FocusError
from focuskit.core.masks import box_to_mask, decode_rle

SIZE = (40, 30)  # width, height


def make(masks: bool = True) -> Detections:
    boxes = np.array([[1, 1, 11, 11], [2, 2, 12, 12], [20, 5, 30, 20], [0, 0, 5, 5]], dtype=float)
    m = np.stack([box_to_mask(b, SIZE) for b in boxes]) if masks else None
    return Detections(boxes, [0.9, 0.8, 0.7, 0.6], ["mug", "mug", "mug", "dog"], {"tag": np.arange(4)}, m)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"xyxy": np.zeros((2, 4)), "scores": [1.0]}, "2 boxes, 1 scores"),
        ({"xyxy": np.zeros((1, 4)), "scores": [1.0], "masks": np.zeros((2, 5, 5))}, "1 boxes, 2 masks"),
        ({"xyxy": np.zeros((1, 4)), "scores": [1.0], "masks": np.zeros(5)}, "\\(N, H, W\\)"),
    ],
)
def test_validation(kwargs, error) -> None:
    with pytest.raises(FocusError, match=error):
        Detections(**kwargs)


def test_indexing_keeps_masks_and_aligned_data() -> None:
    d = make()
    sub = d[np.array([2, 0])]
    assert sub.names == ["mug", "mug"] and sub.data["tag"].tolist() == [2, 0]
    assert sub.masks is not None and sub.masks.shape == (2, 30, 40)
    assert np.array_equal(sub.masks[0], d.masks[2])
    assert d[d.scores > 0.75].scores.tolist() == [0.9, 0.8]


@pytest.mark.parametrize(
    ("max_instances", "names", "scores"),
    [
        (1, ["mug", "dog"], [0.9, 0.6]),
        (2, ["mug", "mug", "dog"], [0.9, 0.7, 0.6]),  # the 0.8 box overlaps the 0.9 one: suppressed
        (5, ["mug", "mug", "dog"], [0.9, 0.7, 0.6]),
    ],
)
def test_max_instances(max_instances, names, scores) -> None:
    out = make().with_max_instances(max_instances, 0.5)
    assert out.names == names and out.scores.tolist() == scores
    assert out.masks is not None and len(out.masks) == len(out)


def test_max_instances_rejects_zero() -> None:
    with pytest.raises(FocusError, match=">= 1"):
        make().with_max_instances(0)


def test_json_has_rle_masks_only_when_present() -> None:
    d = make()
    items = d.to_json()
    assert set(items[0]) == {"concept", "box", "score", "mask"}
    assert np.array_equal(decode_rle(items[2]["mask"]), d.masks[2])
    assert set(make(masks=False).to_json()[0]) == {"concept", "box", "score"}
    assert Detections.empty().to_json() == []


def test_concept_ids() -> None:
    d = make()
    assert d.concept_ids().tolist() == [0, 0, 0, 1]
    assert d.concept_ids(["dog", "cat", "mug"]).tolist() == [2, 2, 2, 0]
    with pytest.raises(FocusError, match="'mug' is not in the concept list"):
        d.concept_ids(["dog"])


def test_supervision_round_trip() -> None:
    sv = pytest.importorskip("supervision")
    d = make()
    s = d.to_supervision(["dog", "mug"])
    assert isinstance(s, sv.Detections) and len(s) == 4
    assert s.class_id.tolist() == [1, 1, 1, 0] and s.mask.shape == (4, 30, 40)
    assert s.data["class_name"].tolist() == d.names
    back = Detections.from_supervision(s)
    assert back.names == d.names and np.allclose(back.xyxy, d.xyxy) and np.allclose(back.scores, d.scores)
    assert np.array_equal(back.masks, d.masks)
    # Without class names: names from the concept list by class id; no confidence means 1.0.
    bare = sv.Detections(xyxy=s.xyxy, class_id=s.class_id)
    again = Detections.from_supervision(bare, ["dog", "mug"])
    assert again.names == d.names and again.scores.tolist() == [1.0] * 4 and again.masks is None
    with pytest.raises(FocusError, match="do not index"):
        Detections.from_supervision(bare, ["dog"])
    assert len(Detections.from_supervision(Detections.empty().to_supervision())) == 0


def test_fiftyone_relative_xywh_round_trip() -> None:
    d = make()
    items = d.to_fiftyone(SIZE)
    assert items[2]["bounding_box"] == pytest.approx([0.5, 5 / 30, 0.25, 0.5])
    assert items[2]["label"] == "mug" and items[2]["confidence"] == pytest.approx(0.7)
    assert items[2]["mask"].shape == (15, 10) and items[2]["mask"].all()
    back = Detections.from_fiftyone(items, SIZE)
    assert np.allclose(back.xyxy, d.xyxy) and back.names == d.names
    assert np.array_equal(back.masks, d.masks)
    plain = Detections.from_fiftyone([{k: v for k, v in i.items() if k != "mask"} for i in items], SIZE)
    assert plain.masks is None
    with pytest.raises(FocusError, match="must be positive"):
        d.to_fiftyone((0, 10))
