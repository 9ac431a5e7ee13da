"""Concept detection on real photos (scikit-image) with the packaged MobileNetV2 and SSD weights.

A concept added from one real photo must be found in new real photos (the other view of the stereo pair; crops,
mirrored and rescaled, pasted into other photos) and not in photos without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focuskit.core.box import Box, box_iou_batch
from focuskit.core.episode import Prediction, Support
from focuskit.core.errors import ConfigError
from focuskit.localizers.base import Localizer
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import ConceptDetector, DetectorConfig, LocalizerDetector
from focuskit.personalize.samples import CUP_BOX, paste, sample_concepts, sample_photos, two_concept_photo


@pytest.fixture(scope="module")
def concepts() -> dict:
    return sample_concepts()


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, concepts: dict) -> ConceptMemory:
    mem = ConceptMemory(tmp_path_factory.mktemp("pekit") / "memory")
    for name, c in concepts.items():
        ref = c["references"][0]
        mem.add(name, [ref.image], boxes=[ref.box], context=c["context"])
    return mem


@pytest.fixture(scope="module")
def detector(memory: ConceptMemory) -> ConceptDetector:
    return ConceptDetector(memory)


def iou(a: Box, b: Box) -> float:
    return float(box_iou_batch([a], [b])[0, 0])


@pytest.mark.parametrize(
    "concept, index",
    [("motorbike", 0), ("cup", 0), ("cat", 1)],
)
def test_concept_is_found_in_a_new_photo(detector: ConceptDetector, concepts: dict, concept: str, index: int) -> None:
    positive = concepts[concept]["positives"][index]
    dets = detector.detect(positive.image)
    assert concept in dets.names, f"{concept} missed: {dets.to_json()}"
    found = [b for b, _, n in dets if n == concept]
    assert len(found) == 1
    if positive.box is not None:  # pasted: the true box is known
        assert iou(found[0], positive.box) >= 0.5, (found[0], positive.box)
    else:  # the right view of the stereo pair: the motorbike spans most of the frame
        assert found[0].area >= 0.3 * positive.image.width * positive.image.height


@pytest.mark.parametrize("photo", ["astronaut", "rocket", "camera"])
def test_nothing_is_found_in_photos_without_the_concepts(detector: ConceptDetector, photo: str) -> None:
    dets = detector.detect(sample_photos()[photo])
    assert len(dets) == 0, dets.to_json()


def test_two_concepts_in_one_photo(detector: ConceptDetector) -> None:
    image, truth = two_concept_photo()
    dets = detector.detect(image)
    assert sorted(dets.names) == ["cat", "cup"]
    for box, _, name in dets:
        assert iou(box, truth[name]) >= 0.5, (name, box, truth[name])
    only_cup = detector.detect(image, concepts=["cup"])
    assert only_cup.names == ["cup"]
    scores = detector.concept_scores(image)
    assert scores["cat"] >= detector.config.tau and scores["cup"] >= detector.config.tau
    assert scores["motorbike"] < detector.config.tau


def test_threshold_controls_detection(memory: ConceptMemory, concepts: dict) -> None:
    image = concepts["cup"]["positives"][0].image
    score = ConceptDetector(memory).concept_scores(image)["cup"]
    assert "cup" in ConceptDetector(memory, config=DetectorConfig(tau=score - 0.01)).detect(image).names
    assert "cup" not in ConceptDetector(memory, config=DetectorConfig(tau=score + 0.01)).detect(image).names


def test_concept_added_without_a_box_is_found_too(tmp_path: Path) -> None:
    photos = sample_photos()
    mem = ConceptMemory(tmp_path / "memory")
    report = mem.add("cup", [photos["coffee"]])
    (view,) = report.views
    assert view.how == "auto" and view.box is not None and iou(view.box, CUP_BOX) >= 0.3
    query, truth = paste(photos["astronaut"], photos["coffee"].crop((60, 10, 490, 395)), 0.4, (300, 300))
    dets = ConceptDetector(mem).detect(query)
    assert dets.names == ["cup"]
    found = next(iter(dets))[0]
    cx, cy = found.center
    # The auto box was the cup (less of the saucer), so the match is the cup inside the pasted cup-and-saucer.
    assert truth.x1 <= cx <= truth.x2 and truth.y1 <= cy <= truth.y2 and iou(found, truth) >= 0.3


class RecordingLocalizer:
    """A stand-in engine: answers with a fixed box for one concept's supports, 'absent' otherwise."""

    name = "recording"

    def __init__(self, hit_box_size: tuple[int, int]) -> None:
        self.calls: list[list[Support]] = []
        self.hit_box_size = hit_box_size

    def localize(self, supports, query_image) -> Prediction:
        self.calls.append(list(supports))
        if supports[0].image.size == self.hit_box_size:
            return Prediction(Box(10, 20, 110, 220), 0.9)
        return Prediction(None, 0.1)


def test_any_localizer_can_be_the_retrieval_stage(memory: ConceptMemory, concepts: dict) -> None:
    cup_view = memory.views("cup")[0]
    engine = RecordingLocalizer(cup_view.image.size)
    assert isinstance(engine, Localizer)
    det = LocalizerDetector(memory, engine)
    dets = det.detect(sample_photos()["astronaut"])
    assert dets.names == ["cup"] and dets.xyxy.tolist() == [[10.0, 20.0, 110.0, 220.0]]
    assert len(engine.calls) == 3  # one localization per concept
    supports = engine.calls[memory.names().index("cup")]
    assert len(supports) == 1 and supports[0].box == cup_view.box
    assert np.array_equal(np.asarray(supports[0].image), np.asarray(cup_view.image))
    assert LocalizerDetector(memory, engine, tau=0.95).detect(sample_photos()["astronaut"]).names == []


@pytest.mark.parametrize("kwargs", [{"tau": 1.5}, {"nms_iou": 0.0}, {"top_k": 0}, {"max_per_concept": 0}])
def test_bad_detector_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DetectorConfig(**kwargs)
