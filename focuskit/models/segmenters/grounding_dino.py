"""GroundingDINO through transformers: boxes for a text prompt.

Two uses in focuskit: category-prompted view extraction (a user adds a photo of "my mug" without a box, and the
best "mug" box becomes the view's box, instead of a generic auto-box that may cut the object or include the hand)
and "object"-prompted class-agnostic proposals (`propose(image)`, so it fits the `Proposer` protocol and can seed a
segmenter's `masks`: GroundingDINO + SAM = GroundedSAM). For users who have a checkpoint
("IDEA-Research/grounding-dino-tiny" or a local folder); tests use a tiny random `GroundingDinoConfig` with a
`processor=` built around a small tokenizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.models.segmenters.sam import load_pretrained

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"


def prompt_text(labels: str | list[str]) -> str:
    """GroundingDINO's text format: lower-case phrases each ended by a period ("a mug. a dog.")."""
    items = [labels] if isinstance(labels, str) else list(labels)
    phrases = [p.strip().lower().rstrip(".").strip() for p in items]
    if not phrases or not all(phrases):
        raise ConfigError(f"a GroundingDINO prompt needs at least one non-empty phrase, got {labels!r}")
    return " ".join(f"{p}." for p in phrases)


def _clean_phrase(text: str) -> str:
    """A decoded phrase without the tokenizer's special tokens ("[SEP]") and the prompt's periods."""
    words = text.replace(".", " ").split()
    return " ".join(w for w in words if not (w.startswith("[") and w.endswith("]")))


class GroundingDinoDetector:
    """Text-prompted boxes: `detect(image, prompt)`, `best_box(image, category)`, `propose(image)`.

    `box_threshold` is the least box score kept, `text_threshold` the least score for a token to name a box;
    `proposal_prompt` is the phrase `propose` asks for; `max_proposals` caps its output.
    """

    name = "grounding_dino"

    def __init__(
        self,
        *,
        model: str | None = None,
        model_config: Any | None = None,
        processor: Any | None = None,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        proposal_prompt: str = "object",
        max_proposals: int = 50,
    ) -> None:
        import transformers

        if model_config is not None:
            if model is not None:
                raise ConfigError("grounding_dino: give model= or model_config= (random weights), not both")
            if processor is None:
                raise ConfigError("grounding_dino: model_config= needs a processor= (GroundingDinoProcessor)")
            self.model = transformers.GroundingDinoForObjectDetection(model_config)
        else:
            name = model or DEFAULT_MODEL
            self.model = load_pretrained(transformers.GroundingDinoForObjectDetection, name, "grounding_dino")
            processor = processor or load_pretrained(transformers.AutoProcessor, name, "grounding_dino processor")
        self.model.eval()
        self.processor = processor
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.proposal_prompt = proposal_prompt
        self.max_proposals = max_proposals

    def detect(self, image: Image.Image, prompt: str | list[str]) -> Detections:
        """Boxes for the prompt's phrases, best score first; names are the phrases the boxes matched."""
        img = load_image(image)
        inputs = self.processor(images=img, text=prompt_text(prompt), return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**inputs)
        (res,) = self.processor.post_process_grounded_object_detection(
            out,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(img.height, img.width)],
        )
        boxes = res["boxes"].to(torch.float64).numpy().reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, img.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, img.height)
        labels = list(res["text_labels"]) if "text_labels" in res else []
        # A box whose tokens all fall below text_threshold may get no phrase: it keeps an empty name.
        names = [_clean_phrase(str(n)) for n in labels][: len(boxes)] + [""] * max(0, len(boxes) - len(labels))
        scores = res["scores"].to(torch.float64).numpy().reshape(-1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        dets = Detections(boxes[keep], scores[keep], [n for n, k in zip(names, keep, strict=True) if k])
        return dets[np.argsort(-dets.scores, kind="stable")]

    def best_box(self, image: Image.Image, category: str) -> tuple[Box, float] | None:
        """The highest-scoring box for `category` (view extraction), with its score; None if none passes."""
        dets = self.detect(image, category)
        if len(dets) == 0:
            return None
        return Box(*dets.xyxy[0]), float(dets.scores[0])

    def propose(self, image: Image.Image) -> np.ndarray:
        """Class-agnostic proposals: (N, 4) xyxy pixel boxes for `proposal_prompt`, best first."""
        return self.detect(image, self.proposal_prompt).xyxy[: self.max_proposals]
