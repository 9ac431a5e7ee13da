"""Auto-boxing of reference views added without a box, on the built-in real photos with hand-checked boxes."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from focuskit.core.box import box_iou_batch
from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.data.realphotos import realphotos_dir
from focuskit.memory.autobox import DEFAULT_METHOD, pick_boxes, skin_map
from focuskit.memory.config import ProposerSpec, default_encoder_spec

HAND_BOXES = {  # from focuskit/assets/realphotos/episodes.jsonl
    "cup_f0010.jpg": [308.0, 122.0, 413.0, 381.0],  # a black bottle held by a hand
    "cup_f0140.jpg": [321.0, 149.0, 432.0, 358.0],
    "box_f0000.jpg": [296.0, 17.0, 597.0, 238.0],  # a box held above a table by an arm
    "box_f0045.jpg": [296.0, 14.0, 586.0, 234.0],
}


@cache
def models() -> tuple[object, object]:
    return default_encoder_spec().create(), ProposerSpec().create()


def iou(a: list[float], b: list[float]) -> float:
    return float(box_iou_batch(np.array([a]), np.array([b]))[0, 0])


def auto(names: list[str], method: str = DEFAULT_METHOD) -> list[list[float]]:
    encoder, proposer = models()
    images = [load_image(realphotos_dir() / n) for n in names]
    picks = pick_boxes(images, [encoder.encode(i) for i in images], proposer, method=method)  # type: ignore[attr-defined]
    assert all(p is not None for p in picks)
    return [p.box.to_xyxy() for p in picks]  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "method"), [("cup_f0010.jpg", "refined-hands"), ("box_f0000.jpg", DEFAULT_METHOD)])
def test_one_view_is_boxed_near_the_hand_box_not_the_frame(name: str, method: str) -> None:
    """The box held above a table: the first method boxed 81% of the frame. The bottle in a hand needs the hands
    method (the default boxes hand and bottle together there: IoU 0.23)."""
    (box,) = auto([name], method)
    w, h = load_image(realphotos_dir() / name).size
    truth = HAND_BOXES[name]
    assert iou(box, truth) >= 0.5
    assert iou(box, truth) > iou([0, 0, w, h], truth) + 0.2
    assert (box[2] - box[0]) * (box[3] - box[1]) < 0.6 * w * h


@pytest.mark.parametrize("name", ["cup_f0010.jpg", "cup_f0140.jpg"])
def test_the_hand_holding_the_object_is_left_out_by_the_hands_method(name: str) -> None:
    img = load_image(realphotos_dir() / name)
    skin = skin_map(img)

    def skin_in(b: list[float]) -> int:
        return int(skin[round(b[1]) : round(b[3]), round(b[0]) : round(b[2])].sum())

    truth = HAND_BOXES[name]
    assert skin.sum() > 5 * skin_in(truth)  # most of the hand lies outside the hand box
    (box,) = auto([name], "refined-hands")
    (first,) = auto([name], "saliency")
    assert skin_in(box) < 1.5 * skin_in(truth) < skin_in(first)  # the first method boxed the hand too
    assert iou(box, truth) >= 0.5


def test_several_frames_of_one_video_are_not_boxed_as_the_whole_frame() -> None:
    """Video frames share their background, so whole-frame boxes agree with each other: the first method's failure."""
    names = ["box_f0000.jpg", "box_f0045.jpg"]
    before, after = auto(names, "saliency"), auto(names)
    for name, b, a in zip(names, before, after, strict=True):
        assert iou(a, HAND_BOXES[name]) >= 0.5
        assert iou(a, HAND_BOXES[name]) > iou(b, HAND_BOXES[name])


def test_a_person_is_boxed_by_default_the_skin_penalty_is_opt_in() -> None:
    """The skin penalty that drops the hand would drop the person too: the default must box the astronaut herself."""
    person = [20.0, 15.0, 365.0, 512.0]  # scikit-image's astronaut portrait, drawn by eye on a 50 px grid

    def on_person(b: list[float]) -> float:  # share of the box that lies on the person
        ix = max(0.0, min(b[2], person[2]) - max(b[0], person[0]))
        iy = max(0.0, min(b[3], person[3]) - max(b[1], person[1]))
        return ix * iy / ((b[2] - b[0]) * (b[3] - b[1]))

    (default,) = auto(["astronaut.jpg"])
    (hands,) = auto(["astronaut.jpg"], "refined-hands")
    assert on_person(default) >= 0.9 and iou(default, person) >= 0.3
    assert on_person(hands) < 0.6  # the helmet she holds, beside her


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="auto-box method"):
        pick_boxes([], [], None, method="magic")


def test_memory_config_names_the_autobox_methods() -> None:
    from focuskit.memory.autobox import METHODS
    from focuskit.memory.config import MemoryConfig

    for method in METHODS:
        assert MemoryConfig(autobox=method).autobox == method
    with pytest.raises(ConfigError, match="autobox"):
        MemoryConfig(autobox="magic")
