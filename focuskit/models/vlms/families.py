"""What differs between the VLM families focuskit drives: image placeholders, turn ends, and how boxes are written.

Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision were each trained to read and write boxes in their own way. Getting that
wrong does not fail loudly, it just makes a pretrained model localize badly, so every family-specific constant lives
here, in one table, keyed by the Hugging Face `model_type` of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from focuskit.core.errors import ModelError

Family = Literal["qwen2_vl", "qwen2_5_vl", "llava_onevision"]
"""A supported VLM family, named by its Hugging Face `model_type`."""

BoxFormat = Literal["norm1000_tokens", "resized_pixels_json", "norm1_list"]
"""How a box is written in prompts and answers; the name says the text form and the coordinate space:

- `norm1000_tokens`: `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`, integers on the 0-1000 grid (Qwen2-VL's native form).
- `resized_pixels_json`: `{"bbox_2d": [x1, y1, x2, y2]}`, integer pixels of the *resized* model input (Qwen2.5-VL).
- `norm1_list`: `[x1, y1, x2, y2]`, fractions of the image size with 3 decimals (LLaVA-OneVision).
"""

FAMILIES: tuple[Family, ...] = get_args(Family)
BOX_FORMATS: tuple[BoxFormat, ...] = get_args(BoxFormat)


@dataclass(frozen=True)
class FamilySpec:
    """The family-specific constants prompt building, encoding and parsing need."""

    name: Family
    image_placeholder: str
    """Text the processor expands into the image's tokens (one per image, in order)."""
    image_token: str
    """The token repeated once per visual feature after expansion."""
    end_of_turn: str
    """Token that closes the assistant's answer; it is trained on so the model learns to stop."""
    interleaved_template: bool
    """Whether the chat template keeps image items where they are in the content list. LLaVA-OneVision's template
    moves all images before all text, which would separate each support box from its image, so for it images are
    written inline as placeholders in one text item."""
    box_format: BoxFormat
    """The form the family was pretrained on, used when `PromptConfig.box_format` is "auto"."""


_SPECS: dict[Family, FamilySpec] = {
    "qwen2_vl": FamilySpec(
        name="qwen2_vl",
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        image_token="<|image_pad|>",
        end_of_turn="<|im_end|>",
        interleaved_template=True,
        box_format="norm1000_tokens",
    ),
    "qwen2_5_vl": FamilySpec(
        name="qwen2_5_vl",
        image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        image_token="<|image_pad|>",
        end_of_turn="<|im_end|>",
        interleaved_template=True,
        box_format="resized_pixels_json",
    ),
    "llava_onevision": FamilySpec(
        name="llava_onevision",
        image_placeholder="<image>",
        image_token="<image>",
        end_of_turn="<|im_end|>",
        interleaved_template=False,
        box_format="norm1_list",
    ),
}


def family_spec(family: str) -> FamilySpec:
    """The spec of `family`; a `ModelError` names the supported ones otherwise."""
    if family not in _SPECS:
        raise ModelError(f"unsupported VLM family {family!r}; supported: {', '.join(FAMILIES)}")
    return _SPECS[family]  # type: ignore[index]


def family_of_processor(processor: Any) -> Family:
    """The family a Hugging Face processor belongs to, from its class name (no import of every model needed)."""
    names = [cls.__name__ for cls in type(processor).__mro__]
    # Most specific first: a Qwen2.5-VL processor may subclass the Qwen2-VL one.
    for cls_name, family in (
        ("Qwen2_5_VLProcessor", "qwen2_5_vl"),
        ("LlavaOnevisionProcessor", "llava_onevision"),
        ("Qwen2VLProcessor", "qwen2_vl"),
    ):
        if cls_name in names:
            return family  # type: ignore[return-value]
    raise ModelError(
        f"processor {type(processor).__name__} is not one of a supported VLM family ({', '.join(FAMILIES)})"
    )


def resolve_box_format(family: str, box_format: str = "auto") -> BoxFormat:
    """The concrete box format: the family's own for "auto", else `box_format` itself (validated)."""
    if box_format == "auto":
        return family_spec(family).box_format
    if box_format not in BOX_FORMATS:
        raise ModelError(f"unknown box format {box_format!r}; expected 'auto' or one of {', '.join(BOX_FORMATS)}")
    return box_format  # type: ignore[return-value]
