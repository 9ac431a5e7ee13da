"""Find the object in reference views that came without a box.

A user adding "my red mug" from three phone photos should not have to draw boxes. The object is, in most reference
photos, (a) the thing the photos have in common, (b) salient, and (c) roughly central and neither tiny nor the
whole frame. Each view's candidates (the proposal source's boxes plus a box around its most salient blob) are scored
on those three cues; with several views, cross-view consistency (the max cosine between a candidate and the other
views' picks or given boxes) dominates, and two rounds let the picks agree with each other. What was picked, and how
sure, is returned so the CLI can draw it for the user to check.

The default method ("refined") fixes what the first one ("saliency") got wrong on real photos: on video frames the
whole frame won (every frame shares the background, so big boxes agree across views), the table under the object
won, and a hand holding the object was boxed with it. Embeddings are centred on their view's mean feature before
views are compared, near-whole-frame boxes lose prior, and the proposer's own ranking counts. A hand holding the
object is left out only by "refined-hands", which also penalises skin-coloured pixels: as a default that penalty
boxed the helmet instead of the astronaut in scikit-image's portrait and half of opencv-doc's orange and apple
(people and warm-coloured objects are what a user teaches most), so it is for hand-held objects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import ConfigError
from focuskit.models.encoders import FeatureMap
from focuskit.models.proposals import Proposer

METHODS = ("saliency", "refined", "refined-hands")
"""`pick_boxes` methods: "saliency" (the first: proposals scored by saliency, centre and cross-view consistency),
"refined" (the default: also the proposer's own order, a penalty on near-whole-frame boxes, and consistency on
view-centred embeddings; `_refined_candidates`) and "refined-hands" (plus a penalty on skin-coloured pixels, for
objects photographed in a hand). Real photos held out from every choice, IoU with the hand boxes
(benchmarks/autobox.py, docs/masks.md), one view / jointly: saliency 0.557 / 0.563, refined 0.609 / 0.764,
refined-hands 0.694 / 0.766 (the held-out photos are mostly a bottle in a hand)."""
DEFAULT_METHOD = "refined"

MIN_AREA_FRACTION = 0.01
"""Candidates smaller than 1% of the view are ignored: a reference photo shows its object larger than that."""


@dataclass(frozen=True)
class AutoBox:
    """The box picked in one view, its combined score in [0, 1] and the cue values that made it."""

    box: Box
    score: float
    consistency: float | None
    saliency: float
    centrality: float
    candidates: int


def saliency_map(image: Image.Image, *, width: int = 64) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) at the image's size, scaled to [0, 1].

    Cheap (one 64-px FFT) and model-free: regions whose spectrum departs from the image's smooth average spectrum
    stand out, which in a reference photo is usually the object.
    """
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    h = max(8, round(width * gray.shape[0] / gray.shape[1]))
    small = cv2.resize(gray, (width, h), interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-8)
    phase = np.angle(spectrum)
    residual = log_amp - cv2.blur(log_amp, (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), sigmaX=2.5)
    sal = cv2.resize(sal, image.size, interpolation=cv2.INTER_LINEAR)
    lo, hi = float(sal.min()), float(sal.max())
    return (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)


def salient_box(sal: np.ndarray) -> np.ndarray | None:
    """Bounding box (4,) of the largest connected region above the saliency map's mean + std, or None."""
    mask = (sal >= sal.mean() + sal.std()).astype(np.uint8)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _saliency_scores(sal: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Contrast of each box: mean saliency inside minus outside, through an integral image."""
    h, w = sal.shape
    integral = cv2.integral(sal.astype(np.float64))
    total = float(integral[-1, -1])
    b = np.round(boxes).astype(np.int64)
    x1, y1 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
    x2, y2 = np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)
    inside = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    area = np.maximum((x2 - x1) * (y2 - y1), 1)
    rest = np.maximum(h * w - area, 1)
    contrast = inside / area - (total - inside) / rest
    return np.clip(contrast, 0.0, 1.0)


def _centrality(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """1 at the image center, 0 at a corner, times an area prior: a reference photo shows its object large.

    The area prior rises linearly from 0 at 2% of the frame to 1 at 25%, and stays 1 up to the whole frame.
    """
    w, h = size
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / w - 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / h - 0.5
    center = 1.0 - np.sqrt(cx**2 + cy**2) / np.sqrt(0.5)
    frac = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (w * h)
    area = np.clip((frac - 0.02) / 0.23, 0.0, 1.0)
    return center * area


def _distinctiveness(fmap: FeatureMap, embeddings: np.ndarray) -> np.ndarray:
    """1 - cosine between each box embedding and the image border's mean feature (the likely background)."""
    unit = fmap.unit
    ring = np.concatenate([unit[:, 0, :], unit[:, -1, :], unit[:, :, 0], unit[:, :, -1]], axis=1).mean(1)
    ring = ring / max(float(np.linalg.norm(ring)), 1e-12)
    # Part-aware embeddings (models/encoders/parts.py) start with the whole-box part: compare that with the ring.
    whole = embeddings[:, : unit.shape[0]]
    whole = whole / np.maximum(np.linalg.norm(whole, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - whole @ ring.astype(np.float32), 0.0, 1.0)


@dataclass
class _ViewCandidates:
    boxes: np.ndarray
    embeddings: np.ndarray
    prior: np.ndarray
    saliency: np.ndarray
    centrality: np.ndarray
    raw: np.ndarray | None = None
    """Uncentred embeddings (the "refined" method): compared with anchors, which come from other maps."""


def _candidates(
    image: Image.Image, fmap: FeatureMap, proposer: Proposer | None, proposed: np.ndarray | None = None
) -> _ViewCandidates:
    """The "saliency" method's candidates; `proposed`: the proposer's boxes when already computed."""
    w, h = image.size
    sal = saliency_map(image)
    if proposed is None:
        proposed = np.zeros((0, 4)) if proposer is None else np.asarray(proposer.propose(image), dtype=np.float64)
    boxes = [np.asarray(proposed, dtype=np.float64).reshape(-1, 4)]
    blob = salient_box(sal)
    if blob is not None:
        boxes.append(blob[None])
    # The whole frame (minus a margin) is the right answer for close-ups, which proposal sources rarely return.
    boxes.append(np.array([[0.05 * w, 0.05 * h, 0.95 * w, 0.95 * h]]))
    all_boxes = np.concatenate(boxes).reshape(-1, 4)
    area = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
    all_boxes = all_boxes[area >= MIN_AREA_FRACTION * w * h]
    emb = fmap.pool_boxes(all_boxes)
    s = _saliency_scores(sal, all_boxes)
    d = _distinctiveness(fmap, emb)
    s_norm = s / s.max() if len(s) and s.max() > 0 else s
    d_norm = d / d.max() if len(d) and d.max() > 0 else d
    saliency = 0.7 * d_norm + 0.3 * s_norm
    c = _centrality(all_boxes, (w, h))
    return _ViewCandidates(all_boxes, emb, 0.5 * saliency + 0.5 * c, saliency, c)


def skin_map(image: Image.Image) -> np.ndarray:
    """(H, W) bool: pixels in the usual YCrCb skin range (Cr 135-175, Cb 80-130), opened to drop specks.

    Reference photos are often taken holding the object; the hand is salient, central and moves with the object
    across views, so every other cue pulls it into the box. Grey images have Cr = Cb = 128 and never match.
    """
    ycc = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2YCrCb)
    skin = cv2.inRange(ycc, np.array([40, 135, 80], np.uint8), np.array([250, 175, 130], np.uint8))
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return skin > 0


def _box_fraction(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each box's pixels set in `mask`, through an integral image."""
    h, w = mask.shape
    integral = cv2.integral(mask.astype(np.uint8)).astype(np.float64)
    b = np.round(boxes).astype(np.int64)
    x1, y1 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
    x2, y2 = np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)
    inside = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    return inside / np.maximum((x2 - x1) * (y2 - y1), 1)


BIG_FROM = 0.6
"""The "refined" prior falls linearly from boxes covering this share of the frame to 0.3x for the whole frame
(0.75 and 0.9 were no better on the tuning photos; 0.9 lost 0.08 single-view mIoU)."""


def _refined_candidates(
    image: Image.Image, fmap: FeatureMap, proposer: Proposer | None, *, hands: bool = False
) -> _ViewCandidates:
    """The "refined" method's candidates: the first method's, with three changes measured on real photos.

    * Objectness: the proposal source's own order (its best boxes first) enters the prior.
    * Size: boxes over 60% of the frame lose prior linearly (the frame box stays possible for close-ups).
    * Hands (`hands=True`, method "refined-hands" only): the prior is scaled down by the share of skin pixels in
      the box. Never on by default: it also scales down people and skin-coloured objects (oranges, bread, wood).
    Embeddings are centred on the view's mean feature before the cross-view consistency is taken, so the
    background that video frames share (the table, the wall) no longer makes big boxes agree with each other.
    """
    w, h = image.size
    proposed = np.zeros((0, 4)) if proposer is None else np.asarray(proposer.propose(image), dtype=np.float64)
    proposed = proposed.reshape(-1, 4)
    big = (proposed[:, 2] - proposed[:, 0]) * (proposed[:, 3] - proposed[:, 1]) >= MIN_AREA_FRACTION * w * h
    base = _candidates(image, fmap, proposer, proposed)
    boxes = base.boxes
    # _candidates keeps the proposer's boxes that are not tiny first, in its order (best first), then the salient
    # blob and the frame box, which get a middling rank.
    kept = int(big.sum())
    rank = np.full(len(boxes), 0.5)
    rank[:kept] = 1.0 - np.arange(kept) / max(kept, 1)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (w * h)
    size = np.clip(1.0 - (areas - BIG_FROM) / (1.0 - BIG_FROM), 0.0, 1.0)
    skin = _box_fraction(skin_map(image), boxes) if hands else np.zeros(len(boxes))
    prior = (0.4 * base.saliency + 0.3 * base.centrality + 0.3 * rank) * (0.3 + 0.7 * size) * (1.0 - skin)
    mean = fmap.pool_boxes(np.array([[0.0, 0.0, w, h]]))[0]
    centred = base.embeddings - mean[None]
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-6)
    return _ViewCandidates(boxes, centred.astype(np.float32), prior, base.saliency, base.centrality, base.embeddings)


def pick_boxes(
    images: Sequence[Image.Image],
    feature_maps: Sequence[FeatureMap],
    proposer: Proposer | None,
    *,
    anchors: np.ndarray | None = None,
    rounds: int = 2,
    method: str = DEFAULT_METHOD,
) -> list[AutoBox | None]:
    """One `AutoBox` per image (None when no candidate survives), picked jointly across the views.

    `anchors` (K, C) are embeddings of the concept's views that have a given box or mask: they are ground truth, so
    candidates are pulled towards them. Without anchors and with a single view, only the prior decides. `method`:
    one of `METHODS` (see there).
    """
    if method not in METHODS:
        raise ConfigError(f"auto-box method must be one of {list(METHODS)}, got {method!r}")
    if method == "saliency":
        views = [_candidates(img, fm, proposer) for img, fm in zip(images, feature_maps, strict=True)]
    else:
        hands = method == "refined-hands"
        views = [
            _refined_candidates(img, fm, proposer, hands=hands) for img, fm in zip(images, feature_maps, strict=True)
        ]
    anchor = np.zeros((0, views[0].embeddings.shape[1] if views else 0), dtype=np.float32)
    if anchors is not None and len(anchors):
        anchor = np.asarray(anchors, dtype=np.float32)
    picks = [int(np.argmax(v.prior)) if len(v.boxes) else -1 for v in views]
    consistency: list[np.ndarray | None] = [None] * len(views)
    for _ in range(rounds if len(views) > 1 or len(anchor) else 0):
        for i, v in enumerate(views):
            if not len(v.boxes):
                continue
            others = [views[j].embeddings[picks[j]] for j in range(len(views)) if j != i and picks[j] >= 0]
            others_arr = np.asarray(others, dtype=np.float32).reshape(-1, anchor.shape[1])
            if not len(anchor) + len(others_arr):
                continue
            # Anchors were pooled from their own maps, uncentred: compare them with the uncentred embeddings.
            own = v.raw if v.raw is not None else v.embeddings
            sims = np.concatenate([own @ anchor.T, v.embeddings @ others_arr.T], axis=1)
            consistency[i] = np.clip(sims.mean(1), 0.0, 1.0)
            picks[i] = int(np.argmax(0.7 * consistency[i] + 0.3 * v.prior))
    out: list[AutoBox | None] = []
    for i, v in enumerate(views):
        k = picks[i]
        if k < 0:
            out.append(None)
            continue
        cons = None if consistency[i] is None else float(consistency[i][k])
        score = float(v.prior[k]) if cons is None else 0.7 * cons + 0.3 * float(v.prior[k])
        out.append(
            AutoBox(
                box=Box(*v.boxes[k]),
                score=round(score, 4),
                consistency=None if cons is None else round(cons, 4),
                saliency=round(float(v.saliency[k]), 4),
                centrality=round(float(v.centrality[k]), 4),
                candidates=len(v.boxes),
            )
        )
    return out
