"""parse_box: every answer form models produce, per family coordinate space, and it never raises (fuzzed)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from focuskit.core.box import Box
from focuskit.models.vlms.parsing import parse_box
from focuskit.models.vlms.prompts import format_box

SIZE = (640, 480)
RESIZED = (308, 224)


@pytest.mark.parametrize(
    ("text", "family", "expected"),
    [
        # Qwen2-VL native form, 0-1000 grid relative to the original image
        ("<|box_start|>(100,200),(300,400)<|box_end|>", "qwen2_vl", (64, 96, 192, 192)),
        ("(100,200),(300,400)", "qwen2_vl", (64, 96, 192, 192)),  # box tokens dropped by skip_special_tokens
        ("The object is at ( 100 , 200 ) , ( 300 , 400 ).", "qwen2_vl", (64, 96, 192, 192)),
        ("<|object_ref_start|>it<|object_ref_end|><|box_start|>(0,0),(1000,1000)<|box_end|>", "qwen2_vl",
         (0, 0, 640, 480)),
        # common variants, read in the family's space
        ("[100, 200, 300, 400]", "qwen2_vl", (64, 96, 192, 192)),
        ('{"bbox_2d": [100, 200, 300, 400]}', "qwen2_vl", (64, 96, 192, 192)),
        # Qwen2.5-VL: absolute pixels of the resized input
        ('```json\n[{"bbox_2d": [77, 56, 154, 112], "label": "object"}]\n```', "qwen2_5_vl", (160, 120, 320, 240)),
        ('{"bbox_2d": [77, 56, 154, 112', "qwen2_5_vl", None),  # truncated before the closing bracket
        ("[77, 56, 154, 112]", "qwen2_5_vl", (160, 120, 320, 240)),
        # LLaVA-OneVision: fractions
        ("[0.1, 0.2, 0.5, 0.75]", "llava_onevision", (64, 96, 320, 360)),
        ("[.1, .2, .5, .75]", "llava_onevision", (64, 96, 320, 360)),
        # repairs: swapped corners, values outside the grid
        ("(300,400),(100,200)", "qwen2_vl", (64, 96, 192, 192)),
        ("(-50,200),(1200,400)", "qwen2_vl", (0, 96, 640, 192)),
    ],
)  # fmt: skip
def test_parses_box_forms(text: str, family: str, expected: tuple[float, ...] | None) -> None:
    parsed = parse_box(text, family, SIZE, RESIZED)
    if expected is None:
        assert not parsed.ok and parsed.box is None and parsed.reason
        return
    assert parsed.ok and not parsed.absent, parsed.reason
    assert parsed.box is not None
    assert parsed.box.as_list(3) == pytest.approx(list(expected), abs=0.01)


@pytest.mark.parametrize(
    ("text", "note"),
    [("(300,400),(100,200)", "corners swapped"), ("(-50,200),(1200,400)", "clipped"), ("(1,2),(3,4)", "")],
)
def test_repairs_are_reported(text: str, note: str) -> None:
    parsed = parse_box(text, "qwen2_vl", SIZE)
    assert parsed.ok
    assert (note in parsed.reason) if note else parsed.reason == ""


@pytest.mark.parametrize("text", ["not present", "Not present.", "The object is NOT PRESENT in the frame", "absent"])
def test_not_present_is_an_absent_answer(text: str) -> None:
    parsed = parse_box(text, "qwen2_vl", SIZE)
    assert parsed.ok and parsed.absent and parsed.box is None and parsed.form == "absent"


def test_a_box_wins_over_the_words_not_present() -> None:
    parsed = parse_box("not present? no: (100,200),(300,400)", "qwen2_vl", SIZE)
    assert parsed.ok and not parsed.absent and parsed.box is not None


@pytest.mark.parametrize(
    ("text", "family", "size", "why"),
    [
        ("", "qwen2_vl", SIZE, "no box"),
        ("I cannot see it", "qwen2_vl", SIZE, "no box"),
        ("(100,200),(100,400)", "qwen2_vl", SIZE, "zero-area"),
        ("(1200,200),(1300,400)", "qwen2_vl", SIZE, "zero-area"),  # both x beyond the grid: clipped to a line
        ("(1,2),(3,4)", "gpt2", SIZE, "unsupported"),
        ("(1,2),(3,4)", "qwen2_vl", (0, 480), "positive"),
        ("(" + "9" * 400 + ",1),(2,3)", "qwen2_vl", SIZE, "no box"),  # absurdly long numbers are not numbers
    ],
)
def test_failures_carry_a_reason(text: str, family: str, size: tuple[int, int], why: str) -> None:
    parsed = parse_box(text, family, size)
    assert not parsed.ok and parsed.box is None and not parsed.absent
    assert why in parsed.reason


_box = st.tuples(st.floats(0, 600), st.floats(0, 440), st.floats(1, 40), st.floats(1, 40)).map(
    lambda t: Box(t[0], t[1], t[0] + t[2], t[1] + t[3])
)


@pytest.mark.parametrize(
    ("family", "fmt", "tolerance"),
    [
        ("qwen2_vl", "norm1000_tokens", 0.5 * 640 / 1000 + 1e-6),  # half a grid step
        ("qwen2_5_vl", "resized_pixels_json", 0.5 * max(640 / 308, 480 / 224) + 1e-6),  # half a resized pixel
        ("llava_onevision", "norm1_list", 0.5 * 640 / 1000 + 1e-6),
    ],
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(box=_box)
def test_format_then_parse_round_trips(family: str, fmt: str, tolerance: float, box: Box) -> None:
    text = format_box(box, fmt, SIZE, RESIZED)  # type: ignore[arg-type]
    parsed = parse_box(text, family, SIZE, RESIZED)
    if parsed.box is None:  # rounding collapsed a sub-pixel box onto the grid: reported, not raised
        assert not parsed.ok and "zero-area" in parsed.reason
        return
    assert parsed.box.as_list(None) == pytest.approx(box.clip(SIZE).as_list(None), abs=tolerance)


_fragments = st.sampled_from(
    ["(", ")", "[", "]", ",", " ", "-", ".", "1e9", "0", "999", "1000", "bbox_2d", '"', ":", "{", "}", "not present",
     "<|box_start|>", "<|box_end|>", "\n", "nan", "inf", "9" * 30]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=200), st.lists(st.one_of(_fragments, st.integers().map(str)), max_size=40).map("".join)
    ),
    family=st.sampled_from(["qwen2_vl", "qwen2_5_vl", "llava_onevision", "unknown"]),
    size=st.tuples(st.integers(-5, 5000), st.integers(-5, 5000)),
)
def test_never_raises(text: str, family: str, size: tuple[int, int]) -> None:
    parsed = parse_box(text, family, size, None)
    assert parsed.ok == (parsed.box is not None or parsed.absent)
    if parsed.box is not None:
        b = parsed.box
        assert 0 <= b.x1 < b.x2 <= size[0] and 0 <= b.y1 < b.y2 <= size[1]
