"""Binary masks: validation, boxes from masks and back, mask IoU, and COCO run-length encoding.

A mask is a boolean (H, W) array at the size of the image it belongs to (True = object); several are (N, H, W).
RLE is COCO's compressed form (`{"size": [H, W], "counts": str}`, column-major), encoded with pycocotools so any
COCO tool reads it back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from focuskit.core.errors import ImageError


def as_masks(masks: Any, image_size: tuple[int, int] | None = None, *, where: str = "masks") -> np.ndarray:
    """`masks` as a boolean (N, H, W) array; a single (H, W) mask becomes (1, H, W).

    With `image_size` = (width, height), the masks must have that size; `ImageError` says what came instead.
    """
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ImageError(f"{where} must be (N, H, W) or (H, W), got shape {m.shape}")
    if image_size is not None:
        width, height = image_size
        if m.shape[1:] != (height, width):
            raise ImageError(
                f"{where} must be (N, {height}, {width}) to match the {width}x{height} image, got shape {m.shape}"
            )
    return m.astype(bool, copy=False)


def box_to_mask(box_xyxy: Any, image_size: tuple[int, int]) -> np.ndarray:
    """The (H, W) mask filling an xyxy pixel box (clipped to the image; pixels whose centre lies inside)."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
    mask = np.zeros((height, width), dtype=bool)
    c1, c2 = max(0, round(x1)), min(width, round(x2))
    r1, r2 = max(0, round(y1)), min(height, round(y2))
    mask[r1:r2, c1:c2] = True
    return mask


def masks_to_boxes(masks: Any) -> np.ndarray:
    """(N, H, W) masks -> (N, 4) xyxy pixel boxes tight around the set pixels (x2, y2 exclusive); empty -> zeros."""
    m = as_masks(masks)
    out = np.zeros((len(m), 4), dtype=np.float64)
    for i, mi in enumerate(m):
        rows = np.flatnonzero(mi.any(1))
        cols = np.flatnonzero(mi.any(0))
        if rows.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def mask_iou_batch(masks_a: Any, masks_b: Any) -> np.ndarray:
    """Pairwise IoU of (N, H, W) and (M, H, W) masks -> (N, M); two empty masks score 0."""
    a, b = as_masks(masks_a), as_masks(masks_b)
    if a.shape[1:] != b.shape[1:] and len(a) and len(b):
        raise ImageError(f"masks to compare must have the same size, got {a.shape[1:]} and {b.shape[1:]}")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0).astype(np.float64)


def mask_nms(masks: Any, scores: Any, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the masks kept by greedy NMS on mask IoU, best score first."""
    m = as_masks(masks)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(m) != len(s):
        raise ImageError(f"mask_nms needs one score per mask: {len(m)} masks, {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    ious = mask_iou_batch(m, m)
    keep: list[int] = []
    for i in order:
        if all(ious[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def _mask_utils() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # pragma: no cover - pycocotools is a pinned dependency
        raise ImportError("RLE masks need pycocotools: pip install 'pycocotools==2.0.11'") from None
    return mask_utils


def encode_rle(mask: Any) -> dict[str, Any]:
    """(H, W) mask -> COCO compressed RLE `{"size": [H, W], "counts": str}` (JSON-ready)."""
    m = as_masks(mask)
    if len(m) != 1:
        raise ImageError(f"encode_rle takes one (H, W) mask, got {len(m)}")
    rle = _mask_utils().encode(np.asfortranarray(m[0].astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed, counts as str or bytes, or uncompressed with a list of counts) -> (H, W) bool mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ImageError(f"an RLE mask needs 'size' and 'counts', got {type(rle).__name__} {str(rle)[:80]!r}")
    utils = _mask_utils()
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        obj = utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return utils.decode(obj).astype(bool)
