"""Visual prompting (PeKit): draw each detected concept in its own color and tell the VLM which color is whom.

The VLM never learns the user's concepts; it is shown a box and told, in the prompt, "the entity in the red box is
called Bruno". Colors come from the memory (a palette slot assigned when the concept was added), so a concept keeps
its color across images and video frames; if two concepts of one image share a slot (more concepts than palette
colors), the later ones borrow free colors for that image only. Boxes carry no text: the association is through
color, as in the paper, and a legend in the corner spells it out for human readers and small VLMs. With nothing
detected the question goes to the VLM unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError
from focuskit.viz.draw import COLOR_NAMES, PALETTE, draw_boxes, draw_legend

if TYPE_CHECKING:
    from focuskit.memory.store import ConceptMemory


@dataclass(frozen=True)
class PromptTemplate:
    """The sentences of a personalized prompt; `{color}`, `{name}`, `{context}`, `{question}` are filled in."""

    concept_line: str = 'In this {medium}, the entity enclosed in the {color} box is called "{name}".'
    context_line: str = 'About "{name}": {context}'
    instruction: str = "Never mention the boxes or their colors; refer to each of these entities by its given name."
    question_line: str = "Question: {question}"
    legend: bool = True
    """Draw a legend (color swatch + name) in a corner of the image."""
    box_width: int | None = None
    """Box outline width in pixels; default scales with the image."""

    def __post_init__(self) -> None:
        for key, text, needed in (
            ("concept_line", self.concept_line, ("{color}", "{name}")),
            ("question_line", self.question_line, ("{question}",)),
        ):
            missing = [n for n in needed if n not in text]
            if missing:
                raise ConfigError(f"prompt.{key} must contain {', '.join(missing)}, got {text!r}")


@dataclass(frozen=True)
class ConceptColor:
    name: str
    color_name: str
    rgb: tuple[int, int, int]


@dataclass
class VisualPrompt:
    """What goes to the VLM: the annotated image(s) and the text, plus the color key used."""

    images: list[Image.Image]
    text: str
    colors: list[ConceptColor] = field(default_factory=list)

    @property
    def personalized(self) -> bool:
        return bool(self.colors)


def assign_colors(memory: ConceptMemory, names: list[str]) -> dict[str, ConceptColor]:
    """Each name's stored palette color; a clash within `names` moves the later name to a free slot."""
    taken: set[int] = set()
    out: dict[str, ConceptColor] = {}
    for name in dict.fromkeys(names):
        slot = memory.color(name) % len(PALETTE)
        if slot in taken:
            free = [i for i in range(len(PALETTE)) if i not in taken]
            slot = free[0] if free else slot
        taken.add(slot)
        out[name] = ConceptColor(name, COLOR_NAMES[slot], PALETTE[slot])
    return out


def overlay_masks(
    image: Image.Image, masks: np.ndarray, rgb: list[tuple[int, int, int]], alpha: float = 0.4
) -> Image.Image:
    """The image with each (H, W) mask tinted in its color (`alpha` of the color over the pixels inside)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for m, c in zip(masks, rgb, strict=True):
        arr[m] = (1 - alpha) * arr[m] + alpha * np.asarray(c, dtype=np.float32)
    return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8))


def annotate(
    image: Image.Image,
    detections: Detections,
    colors: dict[str, ConceptColor],
    *,
    template: PromptTemplate,
    draw_masks: bool = False,
) -> Image.Image:
    """The image with each detection's box in its concept's color (no text on boxes) and the legend.

    `draw_masks` tints each detection's mask (when the detections carry masks) for human readers; the VLM's
    prompt image keeps boxes only, as in PeKit.
    """
    boxes = [box for box, _, _ in detections]
    rgb = [colors[name].rgb for name in detections.names]
    if draw_masks and detections.masks is not None and len(detections):
        image = overlay_masks(image, detections.masks, rgb)
    out = draw_boxes(image, boxes, None, rgb, width=template.box_width)
    if template.legend and colors:
        out = draw_legend(out, [(c.name, c.rgb) for c in colors.values()])
    return out


def prompt_text(
    question: str, colors: list[ConceptColor], memory: ConceptMemory, template: PromptTemplate, *, medium: str = "image"
) -> str:
    """The personalized prompt; `question` unchanged when no concept was detected."""
    if not colors:
        return question
    lines = []
    for c in colors:
        lines.append(template.concept_line.format(color=c.color_name, name=c.name, medium=medium))
        context = memory.context(c.name)
        if context and template.context_line:
            lines.append(template.context_line.format(name=c.name, context=context))
    if template.instruction:
        lines.append(template.instruction)
    lines.append(template.question_line.format(question=question))
    return "\n".join(lines)


def build_prompt(
    image: Image.Image,
    detections: Detections,
    question: str,
    memory: ConceptMemory,
    template: PromptTemplate | None = None,
) -> VisualPrompt:
    """Annotate one image and write the matching prompt; the plain image and question when nothing was found."""
    template = template or PromptTemplate()
    if len(detections) == 0:
        return VisualPrompt([image], question, [])
    colors = assign_colors(memory, list(detections.names))
    annotated = annotate(image, detections, colors, template=template)
    ordered = list(colors.values())
    return VisualPrompt([annotated], prompt_text(question, ordered, memory, template), ordered)
