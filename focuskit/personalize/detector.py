"""Find a memory's concepts in an image (PeKit's retrieval stage), returning `Detections`.

Two detectors behind one protocol:

* `ConceptDetector` (PeKit): class-agnostic proposals -> region embeddings -> for each proposal the concept whose
  views it matches best (max cosine over that concept's stored views, via the memory's vector index) -> kept when
  the cosine is >= `tau` -> per-concept non-maximum suppression, at most `max_per_concept` boxes each. Several
  concepts can be found in one image.
* `LocalizerDetector`: any in-context `Localizer` (e.g. `vlm`, `matching`) as the retrieval stage: for each
  concept, localize it with its stored views as supports. Slower (one call per concept) but uses the engine's own
  notion of presence.

Proposals, region embeddings and scores are the shared `RegionMatcher`'s (focuskit/matcher), the same as the
`matching` localizer's and the photo library's, so a concept found by `detect` gets the box and score that
`localize` (with the concept's stored views as supports) and library search give. Default `tau`: the matcher's value
for the memory's default encoder (`focuskit.matcher.DEFAULT_TAU`: 0.56, see docs/personalize.md for the sweep); a
memory built with another encoder wants its own (0.62 for the former s16+s32 default). PeKit's 0.75 is for DINOv2
ViT-L features, whose cosines run higher: set `tau` per encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from focuskit.core.detections import Detections
from focuskit.core.episode import Prediction, Support
from focuskit.core.errors import ConfigError
from focuskit.core.image import ImageInput, load_image
from focuskit.localizers.base import Localizer
from focuskit.matcher import MatcherConfig, RegionMatcher
from focuskit.matcher.config import DEFAULT_ENCODER_TAG, tau_for
from focuskit.memory.store import ConceptMemory
from focuskit.models.proposals import Proposer

DEFAULT_TAU = tau_for(DEFAULT_ENCODER_TAG)
"""The matcher's threshold for the memory's default encoder (MobileNetV2 s16 with the 3x3 layout grid)."""


@dataclass(frozen=True)
class DetectorConfig:
    tau: float = DEFAULT_TAU
    """Minimum cosine between a proposal and a concept's best view for a detection."""
    nms_iou: float = 0.5
    top_k: int = 64
    """Nearest stored vectors retrieved per proposal; a concept outside them scores -inf for that proposal."""
    max_per_concept: int = 1
    """Boxes kept per concept and image: 1 for personal objects (there is one Bruno), more for e.g. a brand logo."""
    whole_image: bool = True
    """Also score the whole image as a proposal (close-ups, where the object fills the frame); the shared matcher
    always proposes it, so turning this off makes `detect` differ from `localize` and library search."""

    def __post_init__(self) -> None:
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"detector.tau is a cosine threshold in [-1, 1], got {self.tau}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"detector.nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.top_k < 1 or self.max_per_concept < 1:
            raise ConfigError(
                f"detector.top_k and max_per_concept must be >= 1, got {self.top_k} and {self.max_per_concept}"
            )


@runtime_checkable
class Detector(Protocol):
    """Anything that finds a memory's concepts in an image."""

    memory: ConceptMemory

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections: ...

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        """Per concept, the score that `detect` thresholds (for threshold sweeps); -inf when never matched."""
        ...


@dataclass
class _Scored:
    boxes: np.ndarray
    best: np.ndarray
    """(N,) index into `names` of each proposal's best concept."""
    score: np.ndarray
    names: list[str]


class ConceptDetector:
    """PeKit retrieval over a `ConceptMemory` (see the module doc)."""

    def __init__(
        self,
        memory: ConceptMemory,
        *,
        config: DetectorConfig | None = None,
        proposer: Proposer | None = None,
        matcher_config: MatcherConfig | None = None,
    ) -> None:
        self.memory = memory
        self.config = config or DetectorConfig()
        self.matcher = RegionMatcher(
            matcher_config or MatcherConfig(),
            encoder=lambda: memory.encoder,
            proposers=None if proposer is None else [proposer],
        )
        """The shared matcher, embedding with the memory's encoder (whatever it is: its embeddings are tagged)."""

    def _score(self, img: Image.Image, concepts: Sequence[str] | None) -> _Scored:
        fmap, boxes, sources = self.matcher.encode_and_propose(img)
        if not self.config.whole_image:
            boxes = boxes[np.array([s != "whole" for s in sources], dtype=bool)]
        embeddings = self.matcher.embed_regions(fmap, boxes)
        matched = self.memory.match(embeddings, top_k=self.config.top_k)
        names, scores = matched.names, matched.scores
        if concepts is not None:
            wanted = set(concepts)
            keep = [j for j, n in enumerate(names) if n in wanted]
            names, scores = [names[j] for j in keep], scores[:, keep]
        if not names or len(boxes) == 0:
            return _Scored(boxes, np.zeros((len(boxes),), np.int64), np.full((len(boxes),), -np.inf), names)
        best = scores.argmax(1)
        return _Scored(boxes, best, scores[np.arange(len(boxes)), best], names)

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        """Per concept, the highest cosine among proposals whose best concept it is (-inf if none)."""
        s = self._score(load_image(image), concepts)
        out = {n: float("-inf") for n in (concepts if concepts is not None else self.memory.names())}
        for j, n in enumerate(s.names):
            mine = s.score[s.best == j]
            if len(mine):
                out[n] = float(mine.max())
        return out

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        """Boxes of the memory's concepts (or only `concepts`) in `image`, best score first."""
        s = self._score(load_image(image), concepts)
        keep = s.score >= self.config.tau
        if not keep.any():
            return Detections.empty()
        dets = Detections(s.boxes[keep], s.score[keep], [s.names[j] for j in s.best[keep]])
        dets = dets.with_nms(self.config.nms_iou, per_name=True)
        return _cap_per_name(dets, self.config.max_per_concept)


def _cap_per_name(dets: Detections, cap: int) -> Detections:
    """Keep the `cap` best detections of each name (`dets` sorted best first)."""
    seen: dict[str, int] = {}
    keep = []
    for i, name in enumerate(dets.names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] <= cap:
            keep.append(i)
    return dets[np.asarray(keep, dtype=np.int64)]


class LocalizerDetector:
    """An in-context `Localizer` as the retrieval stage: each concept localized with its stored views as supports.

    `tau`, when given, additionally drops boxes whose localizer score is below it; otherwise the engine's own
    present/absent decision stands.
    """

    def __init__(self, memory: ConceptMemory, localizer: Localizer, *, tau: float | None = None) -> None:
        self.memory = memory
        self.localizer = localizer
        self.tau = tau
        self._supports: dict[str, tuple[int, list[Support]]] = {}

    def _concept_supports(self, name: str) -> list[Support]:
        gen = self.memory.generation()
        cached = self._supports.get(name)
        if cached is None or cached[0] != gen:
            cached = (gen, self.memory.supports(name))
            self._supports[name] = cached
        return cached[1]

    def _predict(self, img: Image.Image, concepts: Sequence[str] | None) -> list[tuple[str, Prediction]]:
        names = list(concepts) if concepts is not None else self.memory.names()
        return [(n, self.localizer.localize(self._concept_supports(n), img)) for n in names]

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        img = load_image(image)
        return {n: float(p.score) if p.box is not None else float("-inf") for n, p in self._predict(img, concepts)}

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        img = load_image(image)
        boxes, scores, names = [], [], []
        for n, p in self._predict(img, concepts):
            if p.box is None or (self.tau is not None and p.score < self.tau):
                continue
            boxes.append(p.box.clip(img.size))
            scores.append(float(p.score))
            names.append(n)
        if not boxes:
            return Detections.empty()
        dets = Detections.from_boxes(boxes, scores, names)
        return dets[np.argsort(-dets.scores, kind="stable")]
