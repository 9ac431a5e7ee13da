"""GRPO rewards: IoU with absent handling, strict format, TRL-style inputs, never raising on model output."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import focuskit.training.rewards as rewards_module
from focuskit.core.box import Box
from focuskit.models.vlms.prompts import format_box
from focuskit.training.rewards import completion_text, format_reward, iou_reward

GT = "<|box_start|>(100,100),(300,300)<|box_end|>"


def test_doctests() -> None:
    result = doctest.testmod(rewards_module)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    ("completion", "solution", "expected"),
    [
        (GT, GT, 1.0),
        (GT + "<|im_end|>", GT, 1.0),
        ("<|box_start|>(100,100),(300,200)<|box_end|>", GT, 0.5),
        ("<|box_start|>(300,300),(500,500)<|box_end|>", GT, 0.0),  # touching, no overlap
        ("<|box_start|>(300,300),(100,100)<|box_end|>", GT, 1.0),  # swapped corners are repaired for IoU
        ("(100,100),(300,300)", GT, 1.0),  # box tokens dropped: still a box
        ("not present", GT, 0.0),  # rejection where the object is present
        ("hello", GT, 0.0),
        ("", GT, 0.0),
        ("not present", "not present", 1.0),  # correct rejection
        ("not present", None, 1.0),
        (GT, "not present", 0.0),  # a box where the object is absent
        ("garbage", None, 0.0),
    ],
)
def test_iou_reward_table(completion: str, solution: str | None, expected: float) -> None:
    assert iou_reward([completion], [solution]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GT, 1.0),
        (GT + "<|im_end|>", 1.0),
        ("  " + GT + "\n", 1.0),
        ("not present", 1.0),
        ("Not Present<|im_end|>", 1.0),
        ("(100,100),(300,300)", 0.0),  # parses, but not the trained form
        ("[100, 100, 300, 300]", 0.0),
        ("<|box_start|>(300,300),(100,100)<|box_end|>", 0.0),  # swapped corners
        ("<|box_start|>(100,100),(1300,300)<|box_end|>", 0.0),  # out of range
        ("<|box_start|>(100,100),(100,300)<|box_end|>", 0.0),  # zero width
        (GT + " and more", 0.0),
        (GT + GT, 0.0),
        ("", 0.0),
    ],
)
def test_format_reward_table(completion: str, expected: float) -> None:
    assert format_reward([completion]) == [expected]


def test_format_reward_refuses_rejection_when_absent_answers_are_off() -> None:
    assert format_reward(["not present", GT], allow_absent=False) == [0.0, 1.0]


def test_iou_is_in_pixels_when_sizes_are_given() -> None:
    """Qwen2.5-VL answers are pixels of the resized image: the same text means different boxes per image size."""
    size, resized = (640, 480), (644, 476)
    truth = Box(64, 48, 320, 240)
    sol = format_box(truth, "resized_pixels_json", size, resized)
    pred = format_box(Box(64, 48, 192, 240), "resized_pixels_json", size, resized)
    out = iou_reward([pred, sol], [sol, sol], family="qwen2_5_vl", image_size=[size, size], resized_size=resized)
    assert out[0] == pytest.approx(0.5, abs=0.02)
    assert out[1] == pytest.approx(1.0)
    assert format_reward([sol], family="qwen2_5_vl", image_size=size, resized_size=resized) == [1.0]


def test_trl_conversational_completions() -> None:
    conv = [[{"role": "assistant", "content": GT}], [{"role": "assistant", "content": "not present"}]]
    assert iou_reward(conv, [GT, GT]) == [1.0, 0.0]
    assert format_reward(conv) == [1.0, 1.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]) == "x"


def test_mismatched_lengths_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"one solution per completion, got 1 for 2"):
        iou_reward([GT, GT], [GT])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from([GT, "not present", None]))
def test_rewards_never_raise_and_stay_in_range(text: str, solution: str | None) -> None:
    for value in iou_reward([text], [solution]) + format_reward([text]):
        assert 0.0 <= value <= 1.0


def test_format_reward_takes_allow_absent_per_completion_as_trl_passes_columns() -> None:
    """TRL passes every dataset column as a per-completion list, `allow_absent` included."""
    from focuskit.training.rewards import format_reward

    assert format_reward(["not present", "not present"], allow_absent=[True, False]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 allow_absent values for 1 completions"):
        format_reward(["not present"], allow_absent=[True, False])


@pytest.mark.parametrize(
    ("answers", "solutions", "expected"),
    [
        (["<|box_start|>(0,0),(400,400)<|box_end|>"], ["<|box_start|>(100,100),(300,300)<|box_end|>"], [4.0]),
        (["<|box_start|>(100,100),(200,200)<|box_end|>"], ["<|box_start|>(100,100),(300,300)<|box_end|>"], [0.25]),
        (["garbage", "not present"], ["<|box_start|>(1,1),(9,9)<|box_end|>"] * 2, []),
        (["<|box_start|>(0,0),(9,9)<|box_end|>"], ["not present"], []),
    ],
)
def test_box_area_ratios(answers: list[str], solutions: list[str], expected: list[float]) -> None:
    from focuskit.training.rewards import box_area_ratios

    assert box_area_ratios(answers, solutions) == pytest.approx(expected, rel=1e-6)
