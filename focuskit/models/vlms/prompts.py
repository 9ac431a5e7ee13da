"""Category-free in-context localization prompts, built through each model's own chat template.

The prompt follows the FOCUS paper: a task instruction with no category name, then each support image followed by
its box, then the query image; the answer is the query box in the same form (or "not present" when absent-object
answers are enabled). Box text is family-specific (see `families.py`). `PromptConfig` travels with checkpoints so
training and evaluation resize images identically: Qwen2.5-VL boxes are pixels of the *resized* input, so a
different `max_pixels` at evaluation time would silently shift every box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from focuskit.core.box import NORM_SCALE, Box
from focuskit.core.config import load_config, save_config
from focuskit.core.episode import ImageRef, Support, open_image
from focuskit.core.errors import ConfigError, DatasetError, ImageError
from focuskit.models.vlms.families import BOX_FORMATS, BoxFormat, Family, family_spec, resolve_box_format

PAPER_INSTRUCTION = (
    "Locate the same object across the sequence of frames shown below. Your goal is to identify the target object "
    "consistently using the visual context provided.\n"
    "For the first T-1 frames, the bounding box of the object is already provided. Use this information and the "
    "visual context to predict where the same object appears in the final frame.\n"
    "Output the predicted bounding box for the last frame in the following format: "
    "<answer>[x_min, y_min, x_max, y_max]</answer>"
)
"""The FOCUS paper's prompt, section 5.1 ("the exact prompt text used in all experiments"), verbatim; the paper
prints its three sentences as separate blocks (joined here by newlines) and writes T-1 as a formula, kept as text.
Its output-format sentence names `<answer>[...]</answer>`; focuskit's training targets stay in the family's own box
form (Qwen2-VL: box tokens), and `parse_box` reads both, so an untrained model that follows the sentence is scored."""
FOCUSKIT_INSTRUCTION = (
    "Locate the same object across the sequence of frames. Each frame but the last is followed by the bounding box "
    "of the object in it. Predict where the same object appears in the final frame and answer with its bounding box."
)
"""focuskit's earlier paraphrase (no output-format sentence, shorter); `instruction: focuskit` selects it. The tiny
offline model uses it, so its tokenizer and sequence lengths stay what tests and benchmarks were sized for."""
INSTRUCTION_PRESETS = {"paper": PAPER_INSTRUCTION, "focuskit": FOCUSKIT_INSTRUCTION}
DEFAULT_INSTRUCTION = PAPER_INSTRUCTION
ABSENT_INSTRUCTION = ' If the object does not appear in the final frame, answer "not present".'
NOT_PRESENT = "not present"
"""The answer for a query without the object (issue 5: absent-object handling); `parse_box` reads it as absent."""

PROMPT_FILE = "focuskit_prompt.yaml"
"""Saved beside a checkpoint's weights; `load_vlm` reads it so evaluation builds prompts exactly as training did."""

QWEN_PATCH_SIZE = 14
QWEN_MERGE_SIZE = 2


@dataclass
class PromptConfig:
    """How episodes become prompts. Saved with checkpoints (`PROMPT_FILE`)."""

    instruction: str = DEFAULT_INSTRUCTION
    """Task instruction; never names the category, so the model must match the supports' instance. `paper` (the
    default text) or `focuskit` select a preset (`INSTRUCTION_PRESETS`); any other string is used as written."""
    allow_absent: bool = False
    """Tell the model it may answer "not present", and allow absent-query episodes in training (off in the paper)."""
    box_format: Literal["auto", "norm1000_tokens", "resized_pixels_json", "norm1_list"] = "auto"
    """Box text in prompts and answers; "auto" uses the family's pretrained form (see `families.BoxFormat`)."""
    min_pixels: int = 56 * 56
    """Qwen families: images smaller than this are upscaled (pixels of the resized input)."""
    max_pixels: int = 28 * 28 * 1280
    """Qwen families: images larger than this are downscaled. Visual tokens per image = pixels / 28^2."""

    def __post_init__(self) -> None:
        self.instruction = INSTRUCTION_PRESETS.get(self.instruction, self.instruction)
        if self.box_format != "auto" and self.box_format not in BOX_FORMATS:
            raise ConfigError(
                f"prompt.box_format must be 'auto' or one of {', '.join(BOX_FORMATS)}, got {self.box_format!r}"
            )
        if self.min_pixels < 1:
            raise ConfigError(f"prompt.min_pixels must be >= 1, got {self.min_pixels}")
        if self.max_pixels < self.min_pixels:
            raise ConfigError(f"prompt.max_pixels ({self.max_pixels}) must be >= prompt.min_pixels ({self.min_pixels})")

    def full_instruction(self) -> str:
        return self.instruction + (ABSENT_INSTRUCTION if self.allow_absent else "")


def save_prompt_config(prompt: PromptConfig, directory: str | Path) -> Path:
    """Write `prompt` as `PROMPT_FILE` into a checkpoint directory (atomically); returns the file."""
    path = Path(directory) / PROMPT_FILE
    save_config(prompt, path)
    return path


def load_prompt_config(directory: str | Path) -> PromptConfig | None:
    """The prompt config saved in a checkpoint directory, or None when the checkpoint has none."""
    path = Path(directory) / PROMPT_FILE
    return load_config(PromptConfig, path) if path.is_file() else None


# --- resizing ---------------------------------------------------------------------------------------------------


def _qwen_factor(processor: Any | None) -> int:
    ip = getattr(processor, "image_processor", None)
    patch = int(getattr(ip, "patch_size", QWEN_PATCH_SIZE) or QWEN_PATCH_SIZE)
    merge = int(getattr(ip, "merge_size", QWEN_MERGE_SIZE) or QWEN_MERGE_SIZE)
    return patch * merge


def resized_size(
    family: Family, image_size: tuple[int, int], prompt: PromptConfig, processor: Any | None = None
) -> tuple[int, int]:
    """(width, height) of the image as the model sees it, computed with the processor's own resize rule.

    Qwen families resize so both sides are multiples of patch*merge (28) and the area lies in
    [min_pixels, max_pixels]; LLaVA-OneVision boxes are normalized, so its resize does not matter and the original
    size is returned.
    """
    if family == "llava_onevision":
        return image_size
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    w, h = image_size
    try:
        rh, rw = smart_resize(
            h, w, factor=_qwen_factor(processor), min_pixels=prompt.min_pixels, max_pixels=prompt.max_pixels
        )
    except ValueError as exc:  # aspect ratio above 200: the processor refuses it the same way
        raise ImageError(f"image of {w}x{h} cannot be resized for the model: {exc}") from None
    return rw, rh


# --- box text -----------------------------------------------------------------------------------------------------


def format_box(box: Box, box_format: BoxFormat, image_size: tuple[int, int], resized: tuple[int, int]) -> str:
    """`box` (pixels of the original image) as text in `box_format`.

    >>> format_box(Box(10, 20, 30, 40), "norm1000_tokens", (100, 100), (112, 112))
    '<|box_start|>(100,200),(300,400)<|box_end|>'
    """
    if box_format == "norm1000_tokens":
        x1, y1, x2, y2 = box.to_norm1000(image_size)
        return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
    if box_format == "resized_pixels_json":
        rw, rh = resized
        x1, y1, x2, y2 = box.clip(image_size).to_resized_pixels(image_size, resized)
        x1, x2 = min(max(x1, 0), rw), min(max(x2, 0), rw)
        y1, y2 = min(max(y1, 0), rh), min(max(y2, 0), rh)
        return f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}'
    if box_format == "norm1_list":
        x1, y1, x2, y2 = (v / NORM_SCALE for v in box.to_norm1000(image_size))
        return f"[{x1:.3f}, {y1:.3f}, {x2:.3f}, {y2:.3f}]"
    raise ConfigError(f"unknown box format {box_format!r}; expected one of {', '.join(BOX_FORMATS)}")


def answer_text(box: Box | None, box_format: BoxFormat, image_size: tuple[int, int], resized: tuple[int, int]) -> str:
    """The target answer for a query: its box in `box_format`, or `NOT_PRESENT` when the object is absent."""
    return NOT_PRESENT if box is None else format_box(box, box_format, image_size, resized)


# --- prompts ------------------------------------------------------------------------------------------------------


@dataclass
class BuiltPrompt:
    """A rendered prompt and everything needed to tokenize it and to read its answer back.

    `text` is the chat-template rendering up to and including the generation prompt. The query image's placeholder
    starts at character `query_start`: `text[:query_start]` depends on the supports only, which is what lets the
    localizer compute the supports' KV cache once for many queries.
    """

    family: Family
    box_format: BoxFormat
    text: str
    images: list[Image.Image]
    """Support images then the query image, in prompt order."""
    box_texts: list[str]
    """The supports' box texts, in order (the tokens of mask M in the attention loss)."""
    image_sizes: list[tuple[int, int]]
    resized_sizes: list[tuple[int, int]]
    query_start: int
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix_text(self) -> str:
        return self.text[: self.query_start]

    @property
    def suffix_text(self) -> str:
        return self.text[self.query_start :]

    @property
    def query_image_size(self) -> tuple[int, int]:
        return self.image_sizes[-1]

    @property
    def query_resized_size(self) -> tuple[int, int]:
        return self.resized_sizes[-1]


def _content(family: Family, instruction: str, box_texts: Sequence[str]) -> list[dict[str, str]]:
    spec = family_spec(family)
    if spec.interleaved_template:
        items: list[dict[str, str]] = [{"type": "text", "text": instruction}]
        for box_text in box_texts:
            items += [{"type": "image"}, {"type": "text", "text": box_text}]
        items.append({"type": "image"})
        return items
    # The template would move every image before the text: keep the order by writing placeholders inline.
    parts = [instruction, *(spec.image_placeholder + b for b in box_texts), spec.image_placeholder]
    return [{"type": "text", "text": "".join(parts)}]


def episode_messages(family: Family, prompt: PromptConfig, box_texts: Sequence[str]) -> list[dict[str, Any]]:
    """The chat messages `build_prompt` renders (one user turn: instruction, then support images with their box
    texts, then the query image), for trainers that render prompts themselves (TRL's GRPOTrainer)."""
    return [{"role": "user", "content": _content(family, prompt.full_instruction(), box_texts)}]


def build_prompt(
    processor: Any,
    supports: Sequence[Support],
    query_image: ImageRef,
    prompt: PromptConfig,
    *,
    family: Family,
    query_box: Box | None = None,
    with_answer: bool = False,
    where: str = "",
) -> BuiltPrompt:
    """Render the category-free prompt for `supports` and `query_image` with the processor's chat template.

    Boxes are checked against their images first (`BoxError` naming the support), so a bad episode fails here
    rather than as a silently clipped training target. With `with_answer`, `answer` holds the target text; an
    absent query needs `prompt.allow_absent`.
    """
    if len(supports) == 0:
        raise DatasetError(f"no supports given{f' ({where})' if where else ''}: need at least one (k >= 1)")
    spec = family_spec(family)
    box_format = resolve_box_format(family, prompt.box_format)
    at = f"{where}, " if where else ""
    images = [s.load() for s in supports] + [open_image(query_image)]
    sizes = [im.size for im in images]
    resized = [resized_size(family, size, prompt, processor) for size in sizes]
    box_texts = []
    for i, (s, size, rsize) in enumerate(zip(supports, sizes, resized, strict=False)):
        s.box.validate(size, where=f"{at}support {i + 1}")
        box_texts.append(format_box(s.box, box_format, size, rsize))
    answer = None
    if with_answer:
        if query_box is None and not prompt.allow_absent:
            raise DatasetError(
                f"{at}the query has no box (object absent) but prompt.allow_absent is false: enable it to train "
                "'not present' answers, or drop absent episodes"
            )
        if query_box is not None:
            query_box.validate(sizes[-1], where=f"{at}query")
        answer = answer_text(query_box, box_format, sizes[-1], resized[-1])
    messages = episode_messages(family, prompt, box_texts)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(text, list):  # some processors return one rendering per conversation
        text = text[0]
    query_start = text.rfind(spec.image_placeholder)
    if query_start < 0 or text.count(spec.image_placeholder) != len(images):
        raise ConfigError(
            f"the chat template of {type(processor).__name__} rendered {text.count(spec.image_placeholder)} image "
            f"placeholder(s) {spec.image_placeholder!r} for {len(images)} images; is it a {family} processor?"
        )
    return BuiltPrompt(
        family=family,
        box_format=box_format,
        text=text,
        images=images,
        box_texts=box_texts,
        image_sizes=sizes,
        resized_sizes=resized,
        query_start=query_start,
        answer=answer,
    )


def processor_image_kwargs(family: Family, prompt: PromptConfig) -> dict[str, Any]:
    """Per-call image options so the processor resizes exactly as `resized_size` predicts."""
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return {"size": {"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels}}
    return {}


def visual_tokens(resized: tuple[int, int], merge_factor: int = QWEN_PATCH_SIZE * QWEN_MERGE_SIZE) -> int:
    """Visual tokens a Qwen-family model spends on an image of `resized` size (one per 28x28 block)."""
    return math.prod(v // merge_factor for v in resized)
