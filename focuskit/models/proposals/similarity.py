"""Candidate boxes grown from a dense similarity map: the regions that look like the supports.

The feature map of the query, compared cell by cell with a support embedding, lights up where the object is, even
when no detector would call it an object. Around each local peak, the connected region above a few relative levels
becomes a box; tight levels give the core of the object, loose ones its full extent.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def find_peaks(sim: np.ndarray, *, max_peaks: int = 3, min_distance: int = 1) -> np.ndarray:
    """Local maxima of a (h, w) map as (P, 2) integer (row, col), highest first.

    A cell is a peak when it equals the maximum of its (2*min_distance+1)^2 neighbourhood.
    """
    if sim.ndim != 2 or sim.size == 0:
        raise ValueError(f"similarity map must be a non-empty (h, w) array, got shape {sim.shape}")
    k = 2 * min_distance + 1
    dilated = cv2.dilate(sim.astype(np.float32), np.ones((k, k), np.uint8))
    rows, cols = np.nonzero(sim >= dilated)
    order = np.argsort(-sim[rows, cols], kind="stable")[:max_peaks]
    return np.stack([rows[order], cols[order]], 1)


def cells_to_pixels(boxes_cells: np.ndarray, grid_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Boxes in cell units (x1, y1, x2, y2 with x2/y2 exclusive) -> pixel xyxy of the original image."""
    gw, gh = grid_size
    width, height = image_size
    return np.asarray(boxes_cells, dtype=np.float64).reshape(-1, 4) * np.array(
        [width / gw, height / gh, width / gw, height / gh]
    )


def regions_from_similarity(
    sim: np.ndarray,
    image_size: tuple[int, int],
    *,
    max_peaks: int = 3,
    levels: Sequence[float] = (0.5, 0.65, 0.8),
) -> np.ndarray:
    """Bounding boxes (N, 4) pixel xyxy of the regions grown from the map's peaks.

    For a peak of value p and the map's median m, level t keeps the 8-connected region around the peak where
    sim >= m + t * (p - m). Duplicates (the same region reached from two peaks) are removed.
    """
    height_cells, width_cells = sim.shape
    peaks = find_peaks(sim, max_peaks=max_peaks)
    base = float(np.median(sim))
    boxes: list[tuple[int, int, int, int]] = []
    for r, c in peaks:
        p = float(sim[r, c])
        for t in levels:
            mask = (sim >= base + t * (p - base)).astype(np.uint8)
            _, labels = cv2.connectedComponents(mask, connectivity=8)
            ys, xs = np.nonzero(labels == labels[r, c])
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    unique = np.unique(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), axis=0)
    return cells_to_pixels(unique, (width_cells, height_cells), image_size)
