"""Mask helpers: shapes, boxes from masks and back, mask IoU/NMS, COCO RLE round trips."""

from __future__ import annotations

import numpy as np
import pytest

from focuskit.core.errors import ImageError
from focuskit.core.masks import (
    as_masks,
    box_to_mask,
    decode_rle,
    encode_rle,
    mask_iou_batch,
    mask_nms,
    masks_to_boxes,
)


def disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.mark.parametrize(
    ("value", "size", "shape", "error"),
    [
        (np.zeros((4, 5)), None, (1, 4, 5), None),
        (np.zeros((2, 4, 5)), (5, 4), (2, 4, 5), None),
        (np.zeros((2, 4, 5)), (4, 5), None, "must be \\(N, 5, 4\\)"),
        (np.zeros(3), None, None, "must be \\(N, H, W\\)"),
    ],
)
def test_as_masks(value, size, shape, error) -> None:
    if error:
        with pytest.raises(ImageError, match=error):
            as_masks(value, size)
    else:
        out = as_masks(value, size)
        assert out.shape == shape and out.dtype == bool


def test_box_and_mask_round_trip() -> None:
    m = box_to_mask([2, 3, 7, 9], (10, 12))
    assert m.shape == (12, 10) and m.sum() == 5 * 6
    assert masks_to_boxes(m).tolist() == [[2, 3, 7, 9]]
    assert masks_to_boxes(np.zeros((1, 4, 4))).tolist() == [[0, 0, 0, 0]]
    assert box_to_mask([-5, -5, 100, 2], (10, 12)).sum() == 10 * 2  # clipped


def test_mask_iou_and_nms() -> None:
    a = disk(40, 40, 15, 15, 8)
    b = disk(40, 40, 16, 15, 8)
    c = disk(40, 40, 32, 32, 5)
    ious = mask_iou_batch([a, b, c], [a, c])
    assert ious.shape == (3, 2)
    assert ious[0, 0] == 1.0 and 0.8 < ious[1, 0] < 1.0 and ious[2, 0] == 0.0 and ious[2, 1] == 1.0
    assert mask_iou_batch(np.zeros((0, 40, 40)), [a]).shape == (0, 1)
    assert mask_nms([a, b, c], [0.5, 0.9, 0.1], 0.5).tolist() == [1, 2]


def test_rle_round_trip_and_uncompressed() -> None:
    m = disk(33, 47, 20, 12, 9) | box_to_mask([30, 20, 45, 31], (47, 33))
    rle = encode_rle(m)
    assert rle["size"] == [33, 47] and isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), m)
    assert np.array_equal(decode_rle({**rle, "counts": rle["counts"].encode()}), m)
    # Uncompressed RLE: alternating run lengths in column-major order, starting with background.
    small = np.array([[0, 1], [1, 1]], dtype=bool)
    assert np.array_equal(decode_rle({"size": [2, 2], "counts": [1, 3]}), small)
    with pytest.raises(ImageError, match="'size' and 'counts'"):
        decode_rle({"counts": "x"})
