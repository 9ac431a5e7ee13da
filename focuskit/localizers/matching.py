"""`matching`: training-free localization by feature matching (PeKit's retrieval stage, as a localizer).

The engine is the shared `RegionMatcher` (focuskit/matcher) plus two things only an in-context engine can do:

* candidates: the matcher's proposals (the whole image, SSD-MobileNetV2 at a low threshold and sliding windows, the
  same boxes the photo library stores), and, only when no candidate reaches `tau`, boxes conditioned on the
  supports (regions grown from the dense similarity map and support-sized boxes around its peaks). The library
  cannot do the latter (its boxes are computed before any concept exists), so with the defaults a found object
  gets the same box and score from `localize`, `detect` and library search; only a miss may differ.
* scoring: the matcher's (best cosine of the region's pooled features over every support view, each view also
  embedded mirrored and zoomed out, as the concept memory stores it); an optional coarse layout term (`layout_weight`,
  cosines of a 3x3 grid of sub-boxes) needs the supports' feature maps, which the memory does not keep, so it is off
  by default and there for experiments.

The best candidate wins; when its score is below `tau`, the answer is "not present". When it is found, its edges
are refined while the score rises (`refine_top`, `focuskit.matcher.refine`): proposals are often on the right
object but loose, and any box can be scored for one pooling. Presence is decided before refinement, so it never
turns an absent answer into a found one. `detect` refines its boxes the same way; library search answers the
stored, unrefined proposal.

Support embeddings are cached by image identity and box, so a stream of queries against the same supports pays for
the supports once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.box import Box, box_iou_batch
from focuskit.core.config import from_dict, load_config, to_dict
from focuskit.core.detections import instance_nms
from focuskit.core.episode import ImageRef, Prediction, Support, validate_supports
from focuskit.core.image import load_image
from focuskit.localizers.base import register_localizer
from focuskit.localizers.matching_config import MATCHER_SOURCES, SOURCES, MatchingConfig
from focuskit.matcher import DEFAULT_TAU, MatcherConfig, RegionMatcher
from focuskit.matcher.cache import image_key
from focuskit.matcher.refine import refine_best
from focuskit.models.encoders import Encoder, FeatureMap, create_encoder
from focuskit.models.encoders.parts import grid_boxes
from focuskit.models.proposals import create_proposer
from focuskit.models.proposals.similarity import find_peaks, regions_from_similarity
from focuskit.models.proposals.windows import boxes_around_points

__all__ = [
    "DEFAULT_TAU",
    "MatchingConfig",
    "MatchingLocalizer",
    "SupportView",
    "create_matching",
    "grid_boxes",
    "image_key",
]


@dataclass(frozen=True)
class SupportView:
    """One support, embedded: its variants' embeddings (A, C) (original first, then mirrored and zoomed out, as the
    memory stores them), the original's layout grid (g*g, C), and the box size relative to its image."""

    embeddings: np.ndarray
    grid: np.ndarray
    relative_size: tuple[float, float]

    @property
    def embedding(self) -> np.ndarray:
        """The original view's embedding (C,)."""
        return self.embeddings[0]


class MatchingLocalizer:
    """Feature-matching localizer over the shared `RegionMatcher`; see the module docstring for the method."""

    name = "matching"

    def __init__(self, config: MatchingConfig | None = None, *, encoder: Encoder | None = None) -> None:
        self.config = config or MatchingConfig()
        cfg = self.config
        self.encoder = encoder or create_encoder(cfg.encoder, input_size=cfg.input_size, **cfg.encoder_options)
        self.matcher = RegionMatcher(self.matcher_config(cfg), encoder=self.encoder)
        self.tau = self.matcher.tau
        """The absent threshold in use (the config's, or the encoder's measured default)."""
        self._cache: OrderedDict[tuple[Any, ...], SupportView] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    @staticmethod
    def matcher_config(cfg: MatchingConfig) -> MatcherConfig:
        """The shared matcher's part of this engine's options."""
        return MatcherConfig(
            encoder=cfg.encoder,
            encoder_options=dict(cfg.encoder_options),
            proposers=[p for p in MATCHER_SOURCES if p in cfg.proposals] or ["ssd"],
            proposer_options={
                "ssd": {"score_threshold": cfg.ssd_threshold, "max_proposals": cfg.ssd_max_proposals},
                **MatcherConfig().proposer_options,
            },
            max_proposals=cfg.max_proposals,
            whole_image=cfg.whole_image,
            hflip=cfg.hflip,
            zoom_out=list(cfg.zoom_out),
            tau=cfg.tau,
            refine_top=cfg.refine_top,
            refine_steps=list(cfg.refine_steps),
            refine_accept=cfg.refine_accept,
            rotate=list(cfg.rotate),
            crop_small_cells=cfg.crop_small_cells,
        )

    # --- supports -------------------------------------------------------------------------------------------
    def _grid(self, fm: FeatureMap, boxes: np.ndarray) -> np.ndarray:
        """Layout grids (N, g*g, C) of boxes."""
        g = self.config.layout_grid
        return fm.pool_boxes(grid_boxes(boxes, g)).reshape(len(boxes), g * g, -1)

    def embed_supports(self, supports: Sequence[Support]) -> list[SupportView]:
        """Embed each support view, from the cache when its image and box were seen before.

        Boxes are assumed validated (`validate_supports`). Each distinct support image is encoded once per call,
        even when several supports share it (plus its mirrored and zoomed-out variants).
        """
        cfg = self.config
        # (what the embedding depends on, image, box): supports are grouped by the middle part, so it has a name
        # instead of a position that a new setting could shift (it once grouped every support onto one image).
        settings = (
            self.encoder.name,
            cfg.layout_grid,
            cfg.hflip,
            tuple(cfg.zoom_out),
            tuple(cfg.rotate),
            cfg.crop_small_cells,
        )
        keys = [(settings, image_key(s.image), tuple(s.box.as_list(3))) for s in supports]
        found: dict[tuple[Any, ...], SupportView] = {}
        pending: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(keys):
            if key in found:
                continue
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                found[key] = cached
            else:
                pending.setdefault(key[1], []).append(i)  # by image
        for indices in pending.values():
            img = load_image(supports[indices[0]].image, what=f"support image {indices[0] + 1}")
            fm = self.encoder.encode(img)
            boxes = np.stack([supports[i].box.to_array() for i in indices])
            grids = self._grid(fm, boxes) if cfg.layout_weight > 0 else np.zeros((len(indices), 0, 0), np.float32)
            clipped = [supports[i].box.clip(img.size) for i in indices]
            variants = self.matcher.many_view_variants(img, clipped, fmap=fm)
            for j, i in enumerate(indices):
                b = clipped[j]
                view = SupportView(
                    np.stack([v for _, v in variants[j]]), grids[j], (b.width / img.width, b.height / img.height)
                )
                found[keys[i]] = view
                self.cache_misses += 1
                self._remember(keys[i], view)
        return [found[k] for k in keys]

    def _remember(self, key: tuple[Any, ...], view: SupportView) -> None:
        if self.config.cache_size == 0:
            return
        self._cache[key] = view
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- query ----------------------------------------------------------------------------------------------
    def conditioned_candidates(
        self,
        image: Image.Image,
        fm: FeatureMap,
        sim: np.ndarray,
        views: Sequence[SupportView],
        sources: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Support-conditioned candidate boxes (N, 4) from `sources` (similarity, peaks; windows with the proposer's
        own defaults), and the index of the source that proposed each (into `SOURCES`)."""
        cfg = self.config
        width, height = image.size
        parts: list[np.ndarray] = []
        labels: list[np.ndarray] = []

        def add(source: str, boxes: np.ndarray) -> None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            parts.append(boxes)
            labels.append(np.full(len(boxes), SOURCES.index(source)))

        if "similarity" in sources:
            add("similarity", regions_from_similarity(sim, image.size, max_peaks=cfg.peaks, levels=cfg.grow_levels))
        if "peaks" in sources:
            peaks = find_peaks(sim, max_peaks=cfg.peaks)
            gw, gh = fm.grid_size
            points = np.stack([(peaks[:, 1] + 0.5) * width / gw, (peaks[:, 0] + 0.5) * height / gh], axis=1)
            sizes = np.array([(v.relative_size[0] * width, v.relative_size[1] * height) for v in views])
            add(
                "peaks",
                boxes_around_points(
                    points, sizes, image.size, scales=cfg.peak_scales, aspect_ratios=cfg.peak_aspect_ratios
                ),
            )
        for source in ("ssd", "windows"):
            if source in sources:
                add(
                    source,
                    self.matcher.proposers[self.matcher.config.proposers.index(source)].propose(image)
                    if source in self.matcher.config.proposers
                    else create_proposer(source).propose(image),
                )
        return self._clean(image, parts, labels)

    def _clean(
        self, image: Image.Image, parts: list[np.ndarray], labels: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        if not parts:
            return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
        width, height = image.size
        boxes = np.clip(np.concatenate(parts, axis=0), 0, [width, height, width, height])
        source = np.concatenate(labels, axis=0)
        cfg = self.config
        ok = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_box_size)
        boxes, source = boxes[ok], source[ok]
        # Exact duplicates (the same region from two sources) are scored once; the first source keeps it.
        _, first = np.unique(np.round(boxes, 1), axis=0, return_index=True)
        first.sort()
        return boxes[first], source[first]

    def score_boxes(
        self, fm: FeatureMap, boxes: np.ndarray, views: Sequence[SupportView], embeddings: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N,) of candidate boxes (or of their given `embeddings`), and the best-matching support of each."""
        if len(boxes) == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        emb = self.matcher.embed_regions(fm, boxes) if embeddings is None else embeddings
        per = [len(v.embeddings) for v in views]
        owner = np.repeat(np.arange(len(views)), per)
        cos_all = emb @ np.concatenate([v.embeddings for v in views]).T  # (N, sum A)
        cos = np.full((len(boxes), len(views)), -np.inf, dtype=cos_all.dtype)
        np.maximum.at(cos.T, owner, cos_all.T)  # best variant per support
        w = self.config.layout_weight
        if w > 0:
            grid = self._grid(fm, boxes)
            layout = np.einsum("ngc,kgc->nk", grid, np.stack([v.grid for v in views]), optimize=True) / grid.shape[1]
            cos = (1 - w) * cos + w * layout
        best_view = cos.argmax(1)
        return cos[np.arange(len(boxes)), best_view], best_view

    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction:
        supports = validate_supports(supports)
        views = self.embed_supports(supports)
        image = load_image(query_image, what="query image")
        cfg = self.config
        primary = [p for p in cfg.proposals if p in MATCHER_SOURCES]
        if primary:
            fm, boxes, names = self.matcher.encode_and_propose(image)
            boxes, source = self._clean(image, [boxes], [np.array([SOURCES.index(n) for n in names], np.int64)])
        else:
            fm = self.encoder.encode(image)
            boxes, source = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
        scores, best_view = self.score_boxes(fm, boxes, views)
        conditioned = [p for p in cfg.proposals if p not in MATCHER_SOURCES]
        sim: np.ndarray | None = None
        if conditioned:
            sim = fm.similarity(np.stack([v.embedding for v in views])).max(axis=0)
            more, more_source = self.conditioned_candidates(image, fm, sim, views, conditioned)
            more_scores, more_view = self.score_boxes(fm, more, views)
            boxes, source = np.concatenate([boxes, more]), np.concatenate([source, more_source])
            scores, best_view = np.concatenate([scores, more_scores]), np.concatenate([best_view, more_view])
        fallback_below = self.tau if cfg.fallback_below is None else cfg.fallback_below
        fell_back = bool(cfg.fallback_proposals) and (len(boxes) == 0 or float(scores.max()) < fallback_below)
        if fell_back:
            if sim is None:
                sim = fm.similarity(np.stack([v.embedding for v in views])).max(axis=0)
            more, more_source = self.conditioned_candidates(image, fm, sim, views, cfg.fallback_proposals)
            more_scores, more_view = self.score_boxes(fm, more, views)
            boxes, source = np.concatenate([boxes, more]), np.concatenate([source, more_source])
            scores, best_view = np.concatenate([scores, more_scores]), np.concatenate([best_view, more_view])
        if cfg.crop_small_cells > 0 and len(boxes):  # small candidates re-embedded from crops, then re-scored
            emb = self.matcher.embed_regions(fm, boxes)
            refined = self.matcher.refine_small(image, fm, boxes, emb, scores)
            if refined is not emb:
                scores, best_view = self.score_boxes(fm, boxes, views, refined)
        meta: dict[str, Any] = {"candidates": len(boxes), "encoder": self.encoder.name, "fallback": fell_back}
        if len(boxes) == 0:
            return Prediction(None, 0.0, meta={**meta, "reason": "no candidate regions"})
        best = int(np.argmax(scores))
        score = float(scores[best])
        meta.update(source=SOURCES[int(source[best])], support=int(best_view[best]))
        if score < self.tau:  # decided on the proposals, so refinement cannot turn an absent answer present
            return Prediction(None, score, meta=meta)
        answer = boxes[best]
        if cfg.refine_top > 0 and cfg.crop_small_cells == 0:  # gains are measured on pooled scores, not crop ones
            fit = lambda b: self.score_boxes(fm, b, views)[0]  # noqa: E731
            best, answer, score = refine_best(
                boxes,
                scores,
                fit,
                image.size,
                top=cfg.refine_top,
                steps=cfg.refine_steps,
                accept_gain=cfg.refine_accept,
            )
            meta.update(
                source=SOURCES[int(source[best])],
                refined_from=[round(float(v), 1) for v in boxes[best]],
                proposal_score=round(float(scores[best]), 4),
            )
        extra: tuple[Box, ...] = ()
        if self.config.max_instances > 1:
            above = np.flatnonzero(scores >= self.tau)
            kept = above[instance_nms(boxes[above], scores[above], self.config.instance_iou)]
            apart = box_iou_batch(np.asarray(answer)[None], boxes[kept])[0] <= self.config.instance_iou
            more = [i for i, a in zip(kept, apart, strict=True) if i != best and a][: self.config.max_instances - 1]
            extra = tuple(Box(*boxes[i]) for i in more)
            meta["extra_scores"] = [round(float(scores[i]), 4) for i in more]
        return Prediction(Box(*answer), score, extra_boxes=extra, meta=meta)


@register_localizer("matching")
def create_matching(
    config: str | Path | MatchingConfig | None = None,
    encoder: str | None = None,
    tau: float | None = None,
    **overrides: Any,
) -> MatchingLocalizer:
    """The matching engine from an optional YAML config; `encoder`, `tau` and other fields override it."""
    cfg = config if isinstance(config, MatchingConfig) else load_config(MatchingConfig, config)
    given = {k: v for k, v in {"encoder": encoder, "tau": tau, **overrides}.items() if v is not None}
    if given:
        if "encoder" in given and given["encoder"] != cfg.encoder and "encoder_options" not in given:
            given["encoder_options"] = {}  # options of one encoder (layer, model path) rarely fit another
        cfg = from_dict(MatchingConfig, {**to_dict(cfg), **given}, where="matching options")
    return MatchingLocalizer(cfg)
