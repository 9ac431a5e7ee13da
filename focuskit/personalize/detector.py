"""Find a memory's concepts in an image (PeKit's retrieval stage), returning `Detections`.

Two detectors behind one protocol:

* `ConceptDetector` (PeKit): class-agnostic proposals -> region embeddings -> for each proposal the concept whose
  views it matches best (max cosine over that concept's stored views, via the memory's vector index) -> kept when
  the cosine is >= `tau` -> per-concept non-maximum suppression, at most `max_per_concept` boxes each (several
  instances: `detect(..., max_instances=n)`). Several concepts can be found in one image. With a segmenter
  (`segmenter=` or `DetectorConfig.segmenter`) every detection carries its mask (the box-only detector's boxes,
  segmented). `DetectorConfig.mask_rerank` also re-ranks a found concept's best `rerank_top` candidates above `tau`
  by mask against its stored mask embeddings; off by default: through this detector's proposals it lowered the
  real-photo episodes' mIoU from 0.797 to 0.717 (benchmarks/detect_mask_rerank.py) although the re-rank had helped
  in benchmarks/mask_pooling.py's candidate set. Presence is decided by the box score either way.
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

from focuskit.core.box import nms
from focuskit.core.detections import Detections, instance_nms
from focuskit.core.episode import Prediction, Support
from focuskit.core.errors import ConfigError
from focuskit.core.image import ImageInput, load_image
from focuskit.localizers.base import Localizer
from focuskit.matcher import MatcherConfig, RegionMatcher
from focuskit.matcher.config import DEFAULT_ENCODER_TAG, tau_for
from focuskit.matcher.refine import refine_best
from focuskit.memory.store import ConceptMemory
from focuskit.models.encoders import FeatureMap
from focuskit.models.proposals import Proposer
from focuskit.models.segmenters import Segmenter, create_segmenter, masks_for_boxes
from focuskit.personalize.config import DetectorConfig

DEFAULT_TAU = tau_for(DEFAULT_ENCODER_TAG)
"""The matcher's threshold for the memory's default encoder (MobileNetV2 s16 with the 3x3 layout grid)."""
__all__ = ["DEFAULT_TAU", "ConceptDetector", "Detector", "DetectorConfig", "LocalizerDetector"]


@runtime_checkable
class Detector(Protocol):
    """Anything that finds a memory's concepts in an image."""

    memory: ConceptMemory

    def detect(
        self, image: ImageInput, concepts: Sequence[str] | None = None, *, max_instances: int | None = None
    ) -> Detections:
        """Detections best first, with `best_scores` (every concept's best score, also below tau)."""
        ...

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        """Per concept, the score that `detect` thresholds (for threshold sweeps); -inf when never matched."""
        ...


@dataclass
class _Scored:
    fmap: FeatureMap
    boxes: np.ndarray
    best: np.ndarray
    """(N,) index into `names` of each proposal's best concept."""
    score: np.ndarray
    names: list[str]
    column_best: np.ndarray
    """(len(names),) each concept's best score over all proposals, also where another concept matched better."""


class ConceptDetector:
    """PeKit retrieval over a `ConceptMemory` (see the module doc)."""

    def __init__(
        self,
        memory: ConceptMemory,
        *,
        config: DetectorConfig | None = None,
        proposer: Proposer | None = None,
        matcher_config: MatcherConfig | None = None,
        segmenter: Segmenter | None = None,
    ) -> None:
        self.memory = memory
        self.config = config or DetectorConfig()
        self._segmenter = segmenter
        self._mask_protos: dict[str, tuple[int, np.ndarray]] = {}
        self.matcher = RegionMatcher(
            matcher_config or MatcherConfig(),
            encoder=lambda: memory.encoder,
            proposers=None if proposer is None else [proposer],
        )
        """The shared matcher, embedding with the memory's encoder (whatever it is: its embeddings are tagged)."""

    @property
    def segmenter(self) -> Segmenter | None:
        """The segmenter in use (built from the config's name on first use), or None for boxes only."""
        if self._segmenter is None and self.config.segmenter is not None:
            self._segmenter = create_segmenter(self.config.segmenter)
        return self._segmenter

    def _score(self, img: Image.Image, concepts: Sequence[str] | None) -> _Scored:
        fmap, boxes, sources = self.matcher.encode_and_propose(img)
        if not self.config.whole_image:
            boxes = boxes[np.array([s != "whole" for s in sources], dtype=bool)]
        embeddings = self.matcher.embed_regions(fmap, boxes)
        matched = self.memory.match(embeddings, top_k=self.config.top_k)
        if self.matcher.config.crop_small_cells > 0 and len(boxes):  # best small regions re-embedded from crops
            refined = self.matcher.refine_small(img, fmap, boxes, embeddings, matched.scores.max(1, initial=-np.inf))
            if refined is not embeddings:
                embeddings, matched = refined, self.memory.match(refined, top_k=self.config.top_k)
        names, scores = matched.names, matched.scores
        if concepts is not None:
            wanted = set(concepts)
            keep = [j for j, n in enumerate(names) if n in wanted]
            names, scores = [names[j] for j in keep], scores[:, keep]
        if not names or len(boxes) == 0:
            empty = np.full((len(boxes),), -np.inf)
            return _Scored(fmap, boxes, np.zeros((len(boxes),), np.int64), empty, names, np.full(len(names), -np.inf))
        best = scores.argmax(1)
        return _Scored(fmap, boxes, best, scores[np.arange(len(boxes)), best], names, scores.max(0))

    def _per_concept(self, s: _Scored, concepts: Sequence[str] | None, *, any_region: bool) -> dict[str, float]:
        """Per concept: the best score among proposals whose best concept it is, or (`any_region`) among all."""
        out = {n: float("-inf") for n in (concepts if concepts is not None else self.memory.names())}
        for j, n in enumerate(s.names):
            mine = s.column_best[j : j + 1] if any_region else s.score[s.best == j]
            if len(mine) and np.isfinite(mine).any():
                out[n] = float(np.max(mine))
        return out

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        """Per concept, the highest cosine among proposals whose best concept it is (-inf if none)."""
        return self._per_concept(self._score(load_image(image), concepts), concepts, any_region=False)

    def detect(
        self, image: ImageInput, concepts: Sequence[str] | None = None, *, max_instances: int | None = None
    ) -> Detections:
        """Boxes of the memory's concepts (or only `concepts`) in `image`, best score first.

        At most `max_instances` boxes per concept (default: the config's `max_per_concept`), after NMS within each
        concept. The result's `best_scores` holds every concept's best score over all proposals, also below tau
        and where another concept matched the region better (near misses: "my mug 0.58, below 0.62").
        """
        n = self.config.max_per_concept if max_instances is None else int(max_instances)
        if n < 1:
            raise ConfigError(f"max_instances must be >= 1, got {n}")
        img = load_image(image)
        s = self._score(img, concepts)
        best_scores = self._per_concept(s, concepts, any_region=True)
        keep = s.score >= self.config.tau
        if not keep.any():
            return Detections.empty(best_scores)
        dets = Detections(s.boxes[keep], s.score[keep], [s.names[j] for j in s.best[keep]], best_scores=best_scores)
        if self.segmenter is not None and self.config.mask_rerank:  # boxes chosen by their masks: not refined
            return self._with_masks(img, s.fmap, dets, n)
        dets = self._refined(img, s.fmap, dets.with_max_instances(n, self.config.nms_iou))
        return dets if self.segmenter is None else self._with_masks(img, s.fmap, dets, n)

    def _refined(self, img: Image.Image, fmap: FeatureMap, dets: Detections) -> Detections:
        """Each kept box refined the way `localize` refines its answer (`MatcherConfig.refine_top`, the shared
        `focuskit.matcher.refine`), scored against its own concept's stored views, so `detect` and `localize` give
        the same box and score for the same concept and photo. Presence was decided on the proposals already."""
        cfg = self.matcher.config
        if not self.config.refine or cfg.refine_top < 1 or cfg.crop_small_cells > 0 or len(dets) == 0:
            return dets
        boxes = np.array(dets.xyxy, dtype=np.float64)
        scores = np.array(dets.scores, dtype=np.float32)
        views: dict[str, np.ndarray] = {}
        for i, name in enumerate(dets.names):
            if name not in views:  # one read per concept, not per box
                views[name] = self.memory.view_embeddings(name)[0]
            v = views[name]
            fit = lambda b, v=v: (self.matcher.embed_regions(fmap, b) @ v.T).max(1)  # noqa: E731
            _, boxes[i], scores[i] = refine_best(
                boxes[i : i + 1], scores[i : i + 1], fit, img.size, top=1, steps=cfg.refine_steps,
                accept_gain=cfg.refine_accept,
            )  # fmt: skip
        best = dict(dets.best_scores)
        for name, score in zip(dets.names, scores, strict=True):
            best[name] = max(best.get(name, float("-inf")), float(score))
        out = Detections(boxes, scores, list(dets.names), data=dict(dets.data), best_scores=best)
        return out[np.argsort(-out.scores, kind="stable")]

    def _mask_prototypes(self, name: str) -> np.ndarray:
        gen = self.memory.generation()
        cached = self._mask_protos.get(name)
        if cached is None or cached[0] != gen:
            cached = (gen, self.memory.mask_embeddings(name))
            self._mask_protos[name] = cached
        return cached[1]

    def _with_masks(self, img: Image.Image, fmap: FeatureMap, dets: Detections, n: int) -> Detections:
        """Each detection with its mask. By default the boxes are the box-only detector's (NMS by box score, then
        segmented); with `mask_rerank`, a concept's best `rerank_top` candidates are segmented and re-ranked by their
        mask embedding's best cosine with the concept's stored mask embeddings before NMS."""
        segmenter = self.segmenter
        assert segmenter is not None
        select = instance_nms if n > 1 else nms
        names = np.asarray(dets.names, dtype=object)
        parts: list[Detections] = []
        for name in dict.fromkeys(dets.names):
            idx = np.flatnonzero(names == name)
            idx = idx[np.argsort(-dets.scores[idx], kind="stable")]
            protos = self._mask_prototypes(str(name)) if self.config.mask_rerank else np.zeros((0, 0))
            if len(protos):
                idx = idx[: max(self.config.rerank_top, n)]
                masks = masks_for_boxes(segmenter, img, dets.xyxy[idx])
                mask_score = (fmap.pool_masks(masks) @ protos.T).max(1)
                chosen = select(dets.xyxy[idx], mask_score, self.config.nms_iou)[:n]
                masks, mask_score = masks[chosen], mask_score[chosen]
            else:
                chosen = select(dets.xyxy[idx], dets.scores[idx], self.config.nms_iou)[:n]
                masks = masks_for_boxes(segmenter, img, dets.xyxy[idx[chosen]])
                mask_score = np.full(len(chosen), np.nan)
            part = Detections(
                dets.xyxy[idx[chosen]], dets.scores[idx[chosen]], [str(name)] * len(chosen),
                data={"mask_score": mask_score}, masks=masks,
            )  # fmt: skip
            parts.append(part)
        return _concat(parts, img.size, dets.best_scores)


def _concat(parts: list[Detections], size: tuple[int, int], best_scores: dict[str, float]) -> Detections:
    """Several concepts' detections (all with masks) as one, best box score first."""
    width, height = size
    if not parts:
        return Detections.empty(best_scores)
    out = Detections(
        np.concatenate([p.xyxy for p in parts]),
        np.concatenate([p.scores for p in parts]),
        [n for p in parts for n in p.names],
        data={"mask_score": np.concatenate([p.data["mask_score"] for p in parts])},
        masks=np.concatenate([p.masks for p in parts]).reshape(-1, height, width),  # type: ignore[misc]
        best_scores=best_scores,
    )
    return out[np.argsort(-out.scores, kind="stable")]


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

    def detect(
        self, image: ImageInput, concepts: Sequence[str] | None = None, *, max_instances: int | None = None
    ) -> Detections:
        """The engine's box per concept (plus its `extra_boxes`, up to `max_instances`), best score first."""
        img = load_image(image)
        n_max = 1 if max_instances is None else int(max_instances)
        if n_max < 1:
            raise ConfigError(f"max_instances must be >= 1, got {n_max}")
        boxes, scores, names = [], [], []
        best: dict[str, float] = {}
        for n, p in self._predict(img, concepts):
            has_candidate = p.box is not None or "reason" not in p.meta
            best[n] = float(p.score) if has_candidate else float("-inf")
            if p.box is None or (self.tau is not None and p.score < self.tau):
                continue
            extra_scores = list(p.meta.get("extra_scores", [])) or [float(p.score)] * len(p.extra_boxes)
            for b, sc in list(zip([p.box, *p.extra_boxes], [float(p.score), *extra_scores], strict=False))[:n_max]:
                boxes.append(b.clip(img.size))
                scores.append(sc)
                names.append(n)
        if not boxes:
            return Detections.empty(best)
        dets = Detections.from_boxes(boxes, scores, names)
        dets.best_scores = best
        return dets[np.argsort(-dets.scores, kind="stable")]
