from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from focuskit.core.box import Box, box_giou_batch, box_iou_batch, iou, nms, parse_box_arg
from focuskit.core.errors import BoxError


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap horizontally
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (10, 10, 20, 20), 0.0),  # touching corners
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),  # contained
        ((0, 0, 4, 2), (1, 0, 3, 4), 4 / 12),
    ],
)
def test_iou_hand_computed(a: tuple, b: tuple, expected: float) -> None:
    assert box_iou_batch([Box(*a)], [Box(*b)])[0, 0] == pytest.approx(expected)
    assert iou(Box(*a), Box(*b)) == pytest.approx(expected)


def test_iou_batch_shape_and_empty() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 5, 10, 10], [20, 20, 30, 30]], dtype=float)
    m = box_iou_batch(a, b)
    assert m.shape == (2, 3)
    assert m[1, 1] == pytest.approx(0.0)
    assert box_iou_batch(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou_batch(a, np.zeros((0, 4))).shape == (2, 0)


def test_iou_zero_area_is_zero_not_nan() -> None:
    m = box_iou_batch(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))
    assert m[0, 0] == 0.0


def test_giou_hand_computed() -> None:
    # Disjoint 0..1 and 2..3 squares: union 2, enclosing 3x1 = 3 -> giou = 0 - 1/3
    g = box_giou_batch([Box(0, 0, 1, 1)], [Box(2, 0, 3, 1)])[0, 0]
    assert g == pytest.approx(-1 / 3)
    assert box_giou_batch([Box(0, 0, 1, 1)], [Box(0, 0, 1, 1)])[0, 0] == pytest.approx(1.0)


def test_optional_iou_convention() -> None:
    assert iou(None, None) == 1.0
    assert iou(Box(0, 0, 1, 1), None) == 0.0
    assert iou(None, Box(0, 0, 1, 1)) == 0.0


@given(
    st.floats(0, 500), st.floats(0, 500), st.floats(1, 500), st.floats(1, 500),
    st.integers(16, 4000), st.integers(16, 4000),
)  # fmt: skip
def test_conversions_round_trip(x: float, y: float, w: float, h: float, iw: int, ih: int) -> None:
    box = Box.from_xywh([x, y, w, h])
    assert box.to_xywh() == pytest.approx((x, y, w, h))
    assert Box.from_xyxy(box.to_xyxy()) == box
    # 0-1000 grid: round trip within one grid cell of the image side
    inside = box.clip((iw, ih))
    back = Box.from_norm1000(inside.to_norm1000((iw, ih)), (iw, ih))
    assert abs(back.x1 - inside.x1) <= iw / 1000 / 2 + 1e-6
    assert abs(back.y2 - inside.y2) <= ih / 1000 / 2 + 1e-6


def test_norm1000_values() -> None:
    assert Box(0, 0, 320, 240).to_norm1000((640, 480)) == (0, 0, 500, 500)
    assert Box.from_norm1000([250, 500, 750, 1000], (400, 200)) == Box(100, 100, 300, 200)
    # out-of-image boxes clamp to the grid
    assert Box(-10, -10, 700, 500).to_norm1000((640, 480)) == (0, 0, 1000, 1000)


def test_resized_pixel_conversion() -> None:
    box = Box(100, 50, 300, 150)
    resized = box.to_resized_pixels((400, 200), (200, 100))
    assert resized == (50, 25, 150, 75)
    assert Box.from_resized_pixels(resized, (200, 100), (400, 200)) == box


@pytest.mark.parametrize(
    ("box", "size", "expectation"),
    [
        (Box(0, 0, 10, 10), (10, 10), does_not_raise()),
        (Box(0, 0, 10.4, 10), (10, 10), does_not_raise()),  # half-pixel slack
        (Box(5, 5, 5, 9), (10, 10), pytest.raises(BoxError, match="zero or negative area")),
        (Box(6, 5, 5, 9), None, pytest.raises(BoxError, match="zero or negative area")),
        (Box(0, 0, 11, 10), (10, 10), pytest.raises(BoxError, match="outside the 10x10 image")),
        (Box(-3, 0, 5, 5), (10, 10), pytest.raises(BoxError, match="outside")),
    ],
)
def test_validate(box: Box, size: tuple[int, int] | None, expectation) -> None:
    with expectation:
        box.validate(size)


@pytest.mark.parametrize(
    ("text", "expectation"),
    [
        ("1,2,3,4", does_not_raise()),
        ("1, 2, 3, 4", does_not_raise()),
        ("1,2,3", pytest.raises(BoxError, match="got 3")),
        ("a,b,c,d", pytest.raises(BoxError, match="four numbers")),
    ],
)
def test_parse_box_arg(text: str, expectation) -> None:
    with expectation:
        assert parse_box_arg(text) == Box(1, 2, 3, 4)


def test_box_rejects_non_finite() -> None:
    with pytest.raises(BoxError, match="finite"):
        Box(0, 0, float("nan"), 1)


def test_ordered_swaps_corners() -> None:
    assert Box(10, 20, 0, 5).ordered() == Box(0, 5, 10, 20)


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=float)
    keep = nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5)
    assert keep.tolist() == [1, 2]
