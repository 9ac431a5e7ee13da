"""Visual prompting: stable distinct colors per concept, boxes drawn in them, a legend, and the prompt text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError
from focuskit.memory.store import AugmentConfig, ConceptMemory, EncoderSpec, MemoryConfig
from focuskit.personalize.prompting import PromptTemplate, assign_colors, build_prompt
from focuskit.viz.draw import COLOR_NAMES, PALETTE


def photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8))


@pytest.fixture
def memory(tmp_path: Path) -> ConceptMemory:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 32}).create()
    mem = ConceptMemory(tmp_path / "mem", encoder=encoder, config=MemoryConfig(augment=AugmentConfig(False, [])))
    mem.add("Bruno", [photo(0)], boxes=[Box(0, 0, 40, 40)], context="my golden retriever")
    mem.add("red mug", [photo(1)], boxes=[Box(0, 0, 40, 40)])
    return mem


def dets(*items: tuple[str, tuple[float, float, float, float], float]) -> Detections:
    return Detections.from_boxes([Box(*b) for _, b, _ in items], [s for *_, s in items], [n for n, _, _ in items])


def test_nothing_detected_passes_the_question_through(memory: ConceptMemory) -> None:
    image = photo(5)
    prompt = build_prompt(image, Detections.empty(), "What is on the table?", memory)
    assert prompt.text == "What is on the table?" and not prompt.personalized
    assert np.array_equal(np.asarray(prompt.images[0]), np.asarray(image))


def test_prompt_names_each_concept_with_its_color_and_context(memory: ConceptMemory) -> None:
    found = dets(("Bruno", (10, 10, 60, 60), 0.9), ("red mug", (80, 20, 150, 100), 0.8))
    prompt = build_prompt(photo(5), found, "What is Bruno doing?", memory)
    bruno, mug = (COLOR_NAMES[memory.color(n)] for n in ("Bruno", "red mug"))
    assert bruno != mug
    assert f'entity enclosed in the {bruno} box is called "Bruno"' in prompt.text
    assert f'entity enclosed in the {mug} box is called "red mug"' in prompt.text
    assert 'About "Bruno": my golden retriever' in prompt.text
    assert 'red mug": ' not in prompt.text  # no context given, no context line
    assert prompt.text.rstrip().endswith("Question: What is Bruno doing?")


def test_boxes_are_drawn_in_the_concept_colors_with_a_legend(memory: ConceptMemory) -> None:
    found = dets(("Bruno", (10, 10, 60, 60), 0.9), ("red mug", (80, 20, 150, 100), 0.8))
    annotated = np.asarray(build_prompt(photo(5), found, "q", memory).images[0])
    for name, (x1, y1, _, _) in (("Bruno", (10, 10, 60, 60)), ("red mug", (80, 20, 150, 100))):
        color = PALETTE[memory.color(name)]
        assert tuple(annotated[y1 + 1, x1 + 1]) == color  # on the outline
        assert (annotated == np.array(color)).all(-1).sum() > 150  # outline + legend swatch
    assert (annotated == 255).all(-1).sum() > 100  # the legend's white panel


def test_colors_are_stable_across_images_and_detection_order(memory: ConceptMemory) -> None:
    first = build_prompt(
        photo(1), dets(("Bruno", (0, 0, 30, 30), 0.9), ("red mug", (50, 50, 90, 90), 0.7)), "q", memory
    )
    second = build_prompt(
        photo(2), dets(("red mug", (5, 5, 40, 40), 0.95), ("Bruno", (60, 60, 99, 99), 0.8)), "q", memory
    )
    assert {c.name: c.rgb for c in first.colors} == {c.name: c.rgb for c in second.colors}
    alone = build_prompt(photo(3), dets(("red mug", (5, 5, 40, 40), 0.95)), "q", memory)
    assert alone.colors[0].rgb == {c.name: c.rgb for c in first.colors}["red mug"]


def test_more_concepts_than_colors_still_get_distinct_colors_in_one_image(memory: ConceptMemory) -> None:
    for i in range(len(PALETTE)):
        memory.add(f"c{i}", [photo(10 + i)], boxes=[Box(0, 0, 30, 30)])
    names = memory.names()
    assert len({memory.color(n) for n in names}) == len(PALETTE)  # the palette is used up, then shared
    colors = assign_colors(memory, names[: len(PALETTE)])
    assert len({c.rgb for c in colors.values()}) == len(PALETTE)
    clash = [n for n in names if n != "Bruno" and memory.color(n) == memory.color("Bruno")]
    pair = assign_colors(memory, ["Bruno", clash[0]])
    assert pair["Bruno"].rgb != pair[clash[0]].rgb and pair["Bruno"].rgb == PALETTE[memory.color("Bruno")]


@pytest.mark.parametrize(
    "kwargs",
    [{"concept_line": "the {color} one"}, {"concept_line": "{name} is here"}, {"question_line": "Q:"}],
)
def test_template_must_keep_its_placeholders(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PromptTemplate(**kwargs)


def test_custom_template_and_no_legend(memory: ConceptMemory) -> None:
    template = PromptTemplate(concept_line="{name} wears {color}.", instruction="", legend=False)
    image = Image.new("RGB", (100, 100), (255, 255, 255))
    prompt = build_prompt(image, dets(("Bruno", (10, 10, 50, 50), 0.9)), "Where?", memory, template)
    assert prompt.text.splitlines()[0] == f"Bruno wears {COLOR_NAMES[memory.color('Bruno')]}."
    arr = np.asarray(prompt.images[0])
    assert (arr != 255).any(-1).sum() == (arr == np.array(PALETTE[memory.color("Bruno")])).all(-1).sum()
