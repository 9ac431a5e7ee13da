"""Region embeddings from an encoder: pooled from the full image's feature map, or re-embedded from a crop.

At the encoder's stride a small object covers only a few feature cells, mixed with its surroundings (PeKit's second
limitation). Re-embedding a crop around the region, which the encoder resizes to its working size, gives the
object many cells of its own. `embed_regions` does either, or picks per region (`mode="auto"`: crop when the
region covers fewer than `min_cells` cells of the full map). Masks, when given, restrict the pooling to the object.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image

from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.core.masks import as_masks

Mode = Literal["pool", "crop", "auto"]


def region_cells(fmap: Any, boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N,) how many feature cells of `fmap` each (N, 4) pixel box covers (fractional)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    width, height = fmap.image_size
    gw, gh = fmap.grid_size
    return (boxes[:, 2] - boxes[:, 0]) * gw / width * (boxes[:, 3] - boxes[:, 1]) * gh / height


def crop_window(box: np.ndarray, image_size: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    """Integer crop around an xyxy box: the box plus `context` times its size on every side, inside the image."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    cx1 = int(max(0, np.floor(x1 - context * bw)))
    cy1 = int(max(0, np.floor(y1 - context * bh)))
    cx2 = int(min(width, max(cx1 + 1, np.ceil(x2 + context * bw))))
    cy2 = int(min(height, max(cy1 + 1, np.ceil(y2 + context * bh))))
    return cx1, cy1, cx2, cy2


def embed_regions(
    encoder: Any,
    image: Image.Image,
    boxes_xyxy: np.ndarray,
    *,
    masks: np.ndarray | None = None,
    fmap: Any | None = None,
    mode: Mode = "pool",
    min_cells: float = 16.0,
    context: float = 0.1,
) -> np.ndarray:
    """(N, 4) pixel boxes (and optional (N, H, W) masks) -> (N, C) L2-normalised region embeddings.

    `fmap` is the image's feature map when already computed (pooling reuses it). In "crop" mode each region is
    cut out with `context` margin, encoded on its own (the encoder resizes it to its working size) and pooled inside
    the box (or mask) there. Boxes must lie at least partly inside the image.
    """
    if mode not in ("pool", "crop", "auto"):
        raise ConfigError(f"region embedding mode must be 'pool', 'crop' or 'auto', got {mode!r}")
    img = load_image(image)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    m = None if masks is None else as_masks(masks, img.size, where="region masks")
    if m is not None and len(m) != len(boxes):
        raise ConfigError(f"embed_regions needs one mask per box: {len(boxes)} boxes, {len(m)} masks")
    if len(boxes) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    need_map = mode != "crop"
    if need_map and fmap is None:
        fmap = encoder.encode(img)
    if mode == "pool":
        crop_rows = np.zeros(len(boxes), dtype=bool)
    elif mode == "crop":
        crop_rows = np.ones(len(boxes), dtype=bool)
    else:
        crop_rows = region_cells(fmap, boxes) < min_cells
    out = np.zeros((len(boxes), encoder.dim), dtype=np.float32)
    pooled = ~crop_rows
    if pooled.any():
        out[pooled] = fmap.pool_masks(m[pooled]) if m is not None else fmap.pool_boxes(boxes[pooled])
    for i in np.flatnonzero(crop_rows):
        cx1, cy1, cx2, cy2 = crop_window(boxes[i], img.size, context)
        sub = encoder.encode(img.crop((cx1, cy1, cx2, cy2)))
        if m is not None:
            out[i] = sub.pool_masks(m[i, cy1:cy2, cx1:cx2][None])[0]
        else:
            local = boxes[i] - np.array([cx1, cy1, cx1, cy1], dtype=np.float64)
            out[i] = sub.pool_boxes(local[None])[0]
    return out


# --- small regions on the matcher's path --------------------------------------------------------------------------
CROP_TOP = 8
"""Query candidates re-embedded from crops per image: only the best `CROP_TOP` by the ordinary score, so the cost
is at most this many extra encoder passes per query (and none when the best candidates are not small)."""

CROP_VARIANT = "crop"
"""Name of a support view's crop variant (stored and indexed like `zoom2.5`: a scale augmentation)."""

MASK_PREFIX = "mask"
"""Support-view variants whose name starts with this are pooled inside the view's mask (`mask`, `mask-hflip`,
`mask-zoom2.5`): the concept memory stores them next to the box variants and never indexes them."""


def crop_embeddings(encoder: Any, image: Image.Image, boxes_xyxy: np.ndarray, *, context: float = 0.1) -> np.ndarray:
    """(N, C) embeddings of (N, 4) boxes, each re-embedded from its own crop (`embed_regions(mode="crop")`)."""
    return embed_regions(encoder, image, boxes_xyxy, mode="crop", context=context)


def small_candidates(
    fmap: Any, boxes_xyxy: np.ndarray, scores: np.ndarray, *, min_cells: float, top: int = CROP_TOP
) -> np.ndarray:
    """Indices of the candidates to re-embed from crops: among the `top` best `scores`, those covering fewer than
    `min_cells` cells of `fmap`. Empty when `min_cells` <= 0 (off)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if min_cells <= 0 or len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.flatnonzero(np.isfinite(scores))
    best = finite[np.argsort(-scores[finite], kind="stable")[:top]]
    cells = region_cells(fmap, np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)[best])
    return np.sort(best[cells < min_cells])


def refine_small_regions(
    encoder: Any,
    image: Image.Image,
    fmap: Any,
    boxes_xyxy: np.ndarray,
    embeddings: np.ndarray,
    scores: np.ndarray,
    *,
    min_cells: float,
    top: int = CROP_TOP,
    context: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Query side: `embeddings` with the rows of `small_candidates` replaced by crop embeddings, and those rows.

    The caller re-scores the returned embeddings with its own scorer (a localizer's views, a memory's index), so the
    re-embedded candidates compete with the others on the same scale. Returns the input array itself when no row
    changes.
    """
    rows = small_candidates(fmap, boxes_xyxy, scores, min_cells=min_cells, top=top)
    if len(rows) == 0:
        return embeddings, rows
    out = np.array(embeddings, dtype=np.float32, copy=True)
    out[rows] = crop_embeddings(encoder, image, np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)[rows],
                                context=context)  # fmt: skip
    return out, rows


def crop_variants(
    encoder: Any, image: Image.Image, boxes_xyxy: np.ndarray, fmap: Any, *, min_cells: float, context: float = 0.1
) -> list[np.ndarray | None]:
    """Support side: per view box, its crop embedding when it covers fewer than `min_cells` cells of `fmap` (the
    view's own map), else None (a large view's crop is close to its pooled embedding). Computed once per view,
    where the view's other variants are (the memory stores it, the localizer caches it)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if min_cells <= 0 or len(boxes) == 0:
        return [None] * len(boxes)
    small = region_cells(fmap, boxes) < min_cells
    out: list[np.ndarray | None] = [None] * len(boxes)
    if small.any():
        emb = crop_embeddings(encoder, image, boxes[small], context=context)
        for j, i in enumerate(np.flatnonzero(small)):
            out[i] = emb[j]
    return out
