"""Personalized answers (PeKit): detect the memory's concepts, prompt visually, ask the VLM.

`ask` is the whole pipeline for one image: the detector finds the user's concepts, visual prompting draws them in
their colors and names them in the prompt, and any `VLMBackend` answers. Nothing detected means the question goes
to the VLM as asked, on the plain image, so personalization never makes an answer worse than the base model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError
from focuskit.core.image import ImageInput, load_image
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import ConceptDetector, Detector
from focuskit.personalize.prompting import PromptTemplate, VisualPrompt, build_prompt


@dataclass
class Answer:
    text: str
    detections: Detections
    annotated_image: Image.Image
    """What the VLM saw: the image with the concepts' boxes and legend (the plain image when none was found)."""
    prompt: str

    @property
    def personalized(self) -> bool:
        return len(self.detections) > 0


def ask(
    image: ImageInput,
    question: str,
    memory: ConceptMemory,
    backend: VLMBackend,
    *,
    detector: Detector | None = None,
    template: PromptTemplate | None = None,
    options: GenerationOptions | None = None,
) -> Answer:
    """Answer `question` about `image`, calling the memory's concepts by their names."""
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty: ask something about the image")
    img = load_image(image, what="question image")
    detector = detector or ConceptDetector(memory)
    detections = detector.detect(img)
    prompt: VisualPrompt = build_prompt(img, detections, question.strip(), memory, template)
    text = backend.generate(prompt.images, prompt.text, options=options)
    return Answer(text=text, detections=detections, annotated_image=prompt.images[0], prompt=prompt.text)
