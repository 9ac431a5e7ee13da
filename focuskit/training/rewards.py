"""GRPO reward functions: plain callables in TRL's convention, `f(completions, solution, **kwargs) -> list[float]`.

`completions` are generated answers: strings, or TRL-style conversations (lists of `{"role", "content"}` messages,
whose last message is read). `solution` holds, per completion, the target answer *text* exactly as SFT labels it
(`focuskit.models.vlms.episode_answer`): the query box in the family's box form, or `"not present"` (or `None`)
when the object is absent. Both sides go through the same `parse_box`, so the IoU is computed in one coordinate
space whatever the family writes. Per-completion `image_size` / `resized_size` lists (as TRL passes dataset
columns) map answers to pixels; without them IoU is computed on the answer's own grid, which gives the same value
for the 0-1000 and normalized forms (IoU is invariant to scaling each axis).

Absent objects (issue 5, beyond the paper): a correct rejection earns IoU reward 1, a box where the object is absent
earns 0, and "not present" where it is present earns 0. None of these functions raise on model output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from focuskit.core.box import NORM_SCALE, iou
from focuskit.core.errors import FocusError
from focuskit.models.vlms.families import BoxFormat, resolve_box_format
from focuskit.models.vlms.parsing import ParsedAnswer, parse_box
from focuskit.models.vlms.prompts import NOT_PRESENT

RewardFunc = Callable[..., list[float]]

_INT = r"\d{1,4}"
_FLOAT = r"\d+(?:\.\d+)?"
_STRICT: dict[BoxFormat, re.Pattern[str]] = {
    "norm1000_tokens": re.compile(rf"<\|box_start\|>\({_INT},{_INT}\),\({_INT},{_INT}\)<\|box_end\|>"),
    "resized_pixels_json": re.compile(rf'\{{"bbox_2d": \[{_INT}, {_INT}, {_INT}, {_INT}\]\}}'),
    "norm1_list": re.compile(rf"\[{_FLOAT}, {_FLOAT}, {_FLOAT}, {_FLOAT}\]"),
}
"""The exact answer forms `prompts.format_box` writes: what the format reward accepts."""

_TRAILING = ("<|im_end|>", "<|endoftext|>", "</s>")
_DEFAULT_SIZE = (NORM_SCALE, NORM_SCALE)


def completion_text(completion: Any) -> str:
    """The answer text of one completion: a string, or the content of a conversation's last message.

    >>> completion_text([{"role": "assistant", "content": "not present"}])
    'not present'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content", ""))
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, dict) and "type" in last:  # a list of content blocks
            return "".join(str(b.get("text", "")) for b in completion if isinstance(b, dict))
        return completion_text(last)
    return ""


def _strip(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for tok in _TRAILING:
            if text.endswith(tok):
                text = text[: -len(tok)].rstrip()
                changed = True
    return text


def _per_item(value: Any, n: int, default: Any) -> list[Any]:
    """A per-completion list from a TRL column (list), a single value shared by all, or the default."""
    if value is None:
        return [default] * n
    if isinstance(value, list) and len(value) == n and (n == 0 or not isinstance(value[0], (int, float))):
        return value
    return [value] * n


def _parse(text: str, family: str, size: Any, resized: Any) -> ParsedAnswer:
    size = tuple(size) if size is not None else _DEFAULT_SIZE
    resized = tuple(resized) if resized is not None else size
    return parse_box(text, family, size, resized)  # type: ignore[arg-type]


def _is_absent_solution(solution: Any) -> bool:
    return solution is None or (isinstance(solution, str) and _strip(solution).lower() == NOT_PRESENT)


def iou_reward(
    completions: Sequence[Any],
    solution: Sequence[str | None],
    *,
    family: str | Sequence[str] = "qwen2_vl",
    image_size: Any = None,
    resized_size: Any = None,
    **kwargs: Any,
) -> list[float]:
    """IoU of each answer's box with the target box; 1/0 for absent targets (correct rejection / anything else).

    Unparseable answers score 0; repaired boxes (swapped corners, clipped) are scored as repaired.

    >>> iou_reward(["<|box_start|>(0,0),(500,1000)<|box_end|>"], ["<|box_start|>(0,0),(1000,1000)<|box_end|>"])
    [0.5]
    >>> iou_reward(["not present", "<|box_start|>(0,0),(9,9)<|box_end|>", "???"], [None, "not present", None])
    [1.0, 0.0, 0.0]
    """
    n = len(completions)
    if len(solution) != n:
        raise ValueError(f"iou_reward needs one solution per completion, got {len(solution)} for {n} completions")
    families = _per_item(family, n, "qwen2_vl")
    sizes = _per_item(image_size, n, None)
    rsizes = _per_item(resized_size, n, None)
    rewards: list[float] = []
    for comp, sol, fam, size, rsize in zip(completions, solution, families, sizes, rsizes, strict=True):
        answer = _parse(completion_text(comp), fam, size, rsize)
        if _is_absent_solution(sol):
            rewards.append(1.0 if answer.ok and answer.absent else 0.0)
            continue
        truth = _parse(str(sol), fam, size, rsize)
        if truth.box is None:
            raise FocusError(f"iou_reward: the solution {sol!r} is neither a box nor {NOT_PRESENT!r} ({truth.reason})")
        rewards.append(iou(answer.box, truth.box) if answer.ok and answer.box is not None else 0.0)
    return rewards


def format_reward(
    completions: Sequence[Any],
    solution: Sequence[str | None] | None = None,
    *,
    family: str | Sequence[str] = "qwen2_vl",
    box_format: str = "auto",
    allow_absent: bool | Sequence[bool] = True,
    image_size: Any = None,
    resized_size: Any = None,
    **kwargs: Any,
) -> list[float]:
    """1 when the whole answer is one box in exactly the trained form (or "not present", if allowed), else 0.

    The form is the family's (`box_format="auto"`): for Qwen2-VL `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` with
    integers in 0-1000 and x1 < x2, y1 < y2; a trailing end-of-turn token is fine, extra text is not. Correctness
    is the IoU reward's job, so a well-formed "not present" earns 1 here even when the object is present.

    >>> format_reward(["<|box_start|>(10,20),(300,400)<|box_end|><|im_end|>", "[10, 20, 300, 400]", "not present"])
    [1.0, 0.0, 1.0]
    >>> format_reward(["<|box_start|>(300,20),(10,400)<|box_end|>", "not present"], allow_absent=False)
    [0.0, 0.0]
    """
    n = len(completions)
    families = _per_item(family, n, "qwen2_vl")
    sizes = _per_item(image_size, n, None)
    rsizes = _per_item(resized_size, n, None)
    absent_ok = list(allow_absent) if isinstance(allow_absent, (list, tuple)) else [allow_absent] * n
    if len(absent_ok) != n:
        raise ValueError(f"format_reward got {len(absent_ok)} allow_absent values for {n} completions")
    rewards: list[float] = []
    for comp, fam, size, rsize, may_be_absent in zip(completions, families, sizes, rsizes, absent_ok, strict=True):
        text = _strip(completion_text(comp))
        if text.lower() == NOT_PRESENT:
            rewards.append(1.0 if may_be_absent else 0.0)
            continue
        try:
            fmt = resolve_box_format(fam, box_format)
        except FocusError:
            rewards.append(0.0)
            continue
        if not _STRICT[fmt].fullmatch(text):
            rewards.append(0.0)
            continue
        parsed = _parse(text, fam, size, rsize)
        # No repairs allowed: corners in order, coordinates in range, positive area.
        rewards.append(1.0 if parsed.ok and parsed.box is not None and not parsed.reason else 0.0)
    return rewards


REWARD_FUNCS: dict[str, RewardFunc] = {"iou": iou_reward, "format": format_reward}
"""The rewards a config names in `reward_funcs` (`FocusGRPOConfig`), in TRL's calling convention."""


def parsed_ok(completions: Sequence[Any], *, family: str = "qwen2_vl") -> list[bool]:
    """Whether each answer parses at all (a box in any accepted form, or "not present"): a diagnostics helper."""
    return [_parse(completion_text(c), family, None, None).ok for c in completions]


def box_area_ratios(
    completions: Sequence[Any], solution: Sequence[str | None], *, family: str = "qwen2_vl", **kwargs: Any
) -> list[float]:
    """answer box area / target box area for each answer that is a box whose target is a box (others skipped).

    IoU rewards hedging with larger boxes when the model is unsure; a median drifting well above 1 shows it.

    >>> truth = "<|box_start|>(100,100),(300,300)<|box_end|>"
    >>> box_area_ratios(["<|box_start|>(0,0),(400,400)<|box_end|>", "no"], [truth, truth])
    [4.0]
    """
    ratios: list[float] = []
    for comp, sol in zip(completions, solution, strict=True):
        if _is_absent_solution(sol):
            continue
        truth = _parse(str(sol), family, None, None).box
        answer = _parse(completion_text(comp), family, None, None)
        if truth is not None and truth.area > 0 and answer.ok and answer.box is not None:
            ratios.append(answer.box.area / truth.area)
    return ratios
