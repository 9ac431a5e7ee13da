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

The best candidate wins; when its score is below `tau`, the answer is "not present". Support embeddings are cached
by image identity and box, so a stream of queries against the same supports pays for the supports once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.config import from_dict, load_config, to_dict
from focuskit.core.detections import instance_nms
from focuskit.core.episode import ImageRef, Prediction, Support, validate_supports
from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.localizers.base import register_localizer
from focuskit.matcher import DEFAULT_TAU, MatcherConfig, RegionMatcher
from focuskit.models.encoders import Encoder, FeatureMap, create_encoder
from focuskit.models.encoders.parts import grid_boxes
from focuskit.models.proposals import create_proposer
from focuskit.models.proposals.similarity import find_peaks, regions_from_similarity
from focuskit.models.proposals.windows import boxes_around_points

SOURCES = ("whole", "ssd", "windows", "similarity", "peaks")
MATCHER_SOURCES = ("ssd", "windows")
"""Sources proposed without the supports (the shared matcher's); 'similarity' and 'peaks' need the supports."""
__all__ = ["DEFAULT_TAU", "MatchingConfig", "MatchingLocalizer", "SupportView", "create_matching", "grid_boxes"]


@dataclass
class MatchingConfig:
    """Options of the matching engine; `configs/matching.yaml` lists them with their defaults."""

    encoder: str = "mobilenetv2"
    """Feature encoder name (see `focuskit.models.encoders.list_encoders()`)."""
    encoder_options: dict[str, Any] = field(default_factory=lambda: dict(MatcherConfig().encoder_options))
    """Extra keyword arguments for the encoder, e.g. {layer: s16} or {model: /path/to/dinov2} for hub encoders. The
    default is the concept memory's and the library's, so the three surfaces agree."""
    input_size: int = 448
    """Longer image side fed to the encoder, in pixels. Larger finds smaller objects and costs quadratically more."""
    tau: float | None = None
    """Absent threshold on the best candidate's score; below it the answer is "not present". None: the value
    measured for the encoder on the built-in real photos (`DEFAULT_TAU`), since cosine scales differ by network."""
    proposals: list[str] = field(default_factory=lambda: ["ssd", "windows"])
    """Candidate sources, any of: ssd, windows (the shared matcher's, with the whole image), similarity, peaks."""
    fallback_proposals: list[str] = field(default_factory=lambda: ["similarity", "peaks"])
    """Sources tried only when the best candidate of `proposals` scores below `fallback_below`."""
    fallback_below: float | None = None
    """Score under which `fallback_proposals` are added (None: tau)."""
    ssd_threshold: float = 0.02
    """SSD score threshold; low on purpose, since the detector's class and confidence are not what is matched."""
    ssd_max_proposals: int = 100
    max_proposals: int = 96
    """Boxes kept from the matcher's sources (the whole image and an equal share of each)."""
    whole_image: bool = True
    """Propose the whole image too (as `detect` and the library do)."""
    hflip: bool = False
    """Also embed each support mirrored (the concept memory does what its `augment` says; the defaults agree)."""
    zoom_out: list[float] = field(default_factory=lambda: [2.5])
    """Also embed each support zoomed out by these factors (as the concept memory does)."""
    peaks: int = 3
    """Local maxima of the similarity map used by the 'similarity' and 'peaks' sources."""
    grow_levels: list[float] = field(default_factory=lambda: [0.5, 0.65, 0.8])
    """Relative levels between the map's median (0) and a peak (1) at which regions are grown."""
    peak_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.4, 2.0])
    """Sizes around peaks, relative to a support box's size as a fraction of its image."""
    peak_aspect_ratios: list[float] = field(default_factory=lambda: [0.6, 1.0, 1.6])
    layout_weight: float = 0.0
    """Weight of the 3x3 layout similarity in the score (0 = the shared matcher's score; above 0 `localize` no
    longer agrees with `detect` and library search)."""
    layout_grid: int = 3
    min_box_size: float = 4.0
    """Candidates narrower or shorter than this many pixels are dropped."""
    max_instances: int = 1
    """Above 1, further non-overlapping candidates above tau are returned as `Prediction.extra_boxes` (their
    scores in `meta["extra_scores"]`), after NMS among the candidates above tau at `instance_iou`."""
    instance_iou: float = 0.3
    """IoU above which two candidates count as the same instance (per-instance NMS, which also drops a candidate
    lying mostly inside a kept one or covering one: `focuskit.core.detections.instance_nms`)."""
    cache_size: int = 256
    """Support embeddings kept in memory (least recently used are dropped)."""
    crop_small_cells: float = MatcherConfig.crop_small_cells
    """Re-embed small supports and the best small candidates from crops (`MatcherConfig.crop_small_cells`)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.proposals) - set(SOURCES))
        if unknown or not self.proposals:
            raise ConfigError(f"matching proposals must be a non-empty list of {list(SOURCES)}, got {self.proposals}")
        unknown = sorted(set(self.fallback_proposals) - set(SOURCES))
        if unknown:
            raise ConfigError(f"matching fallback_proposals must be a list of {list(SOURCES)}, got {unknown}")
        if self.input_size < 32:
            raise ConfigError(f"matching input_size must be >= 32 pixels, got {self.input_size}")
        if self.tau is not None and not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"matching tau must be in [-1, 1] (a cosine similarity), got {self.tau}")
        if not 0.0 <= self.layout_weight <= 1.0:
            raise ConfigError(f"matching layout_weight must be in [0, 1], got {self.layout_weight}")
        if self.layout_grid < 1:
            raise ConfigError(f"matching layout_grid must be >= 1, got {self.layout_grid}")
        if self.peaks < 1:
            raise ConfigError(f"matching peaks must be >= 1, got {self.peaks}")
        if any(not 0.0 <= t < 1.0 for t in self.grow_levels) or not self.grow_levels:
            raise ConfigError(f"matching grow_levels must be numbers in [0, 1), got {self.grow_levels}")
        if any(s <= 0 for s in self.peak_scales) or any(a <= 0 for a in self.peak_aspect_ratios):
            raise ConfigError("matching peak_scales and peak_aspect_ratios must be positive numbers")
        if self.max_instances < 1:
            raise ConfigError(f"matching max_instances must be >= 1, got {self.max_instances}")
        if not 0.0 < self.instance_iou <= 1.0:
            raise ConfigError(f"matching instance_iou must be in (0, 1], got {self.instance_iou}")
        if self.cache_size < 0:
            raise ConfigError(f"matching cache_size must be >= 0, got {self.cache_size}")


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


def image_key(image: ImageRef | str) -> tuple[Any, ...]:
    """A cache key that changes when the image does: path + mtime + size for files, a pixel hash for arrays."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            stat = path.stat()
        except OSError:
            return ("path", str(path))  # load_image will raise the user-facing error
        return ("path", str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    img = load_image(image)
    digest = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
    return ("pixels", img.size, digest)


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
        settings = (self.encoder.name, cfg.layout_grid, cfg.hflip, tuple(cfg.zoom_out), cfg.crop_small_cells)
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
        if score < self.tau:
            return Prediction(None, score, meta=meta)
        extra: tuple[Box, ...] = ()
        if self.config.max_instances > 1:
            above = np.flatnonzero(scores >= self.tau)
            kept = above[instance_nms(boxes[above], scores[above], self.config.instance_iou)]
            more = [i for i in kept if i != best][: self.config.max_instances - 1]
            extra = tuple(Box(*boxes[i]) for i in more)
            meta["extra_scores"] = [round(float(scores[i]), 4) for i in more]
        return Prediction(Box(*boxes[best]), score, extra_boxes=extra, meta=meta)


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
