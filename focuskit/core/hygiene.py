"""Reference hygiene: how well each view of a concept agrees with the others, and which views are outliers.

A bad reference view (the wrong object, a box that cuts the object or holds mostly the hand) pulls a concept's
prototype away and causes false positives (PeKit's own limitation). Pure functions over the concept's per-view
embeddings, so the concept memory, `concept show` and a prune command can all call them:

* `view_consistency(E)`: leave-one-out score per view: the cosine of view i with the mean of the *other* views
  (unit vectors), so a view cannot vouch for itself;
* `flag_outliers(scores)`: views whose score falls below `min_score`, or more than `mad_k` robust deviations
  (median absolute deviation, scaled to sigma) and at least `min_gap` below the median of the concept's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from focuskit.core.errors import FocusError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def view_consistency(embeddings: np.ndarray) -> np.ndarray:
    """(V, C) per-view embeddings -> (V,) leave-one-out cosine of each view with the mean of the other views.

    One view has nothing to compare with: its score is NaN. Embeddings need not be unit length (they are
    normalised here); a view of all zeros scores 0.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise FocusError(f"view embeddings must be (V, C), got shape {e.shape}")
    v = len(e)
    if v == 0:
        return np.zeros((0,))
    if v == 1:
        return np.full((1,), np.nan)
    u = _unit(e)
    others = _unit(u.sum(0, keepdims=True) - u)  # mean of the other views, up to scale
    return np.einsum("vc,vc->v", u, others)


@dataclass(frozen=True)
class ViewReport:
    """Per view: its leave-one-out score and whether it is flagged; `reason` says why (empty when kept)."""

    scores: np.ndarray
    outliers: np.ndarray
    reasons: tuple[str, ...]

    @property
    def outlier_indices(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.outliers)]


def flag_outliers(
    scores: np.ndarray,
    *,
    min_score: float | None = None,
    mad_k: float = 3.0,
    min_gap: float = 0.1,
    min_views: int = 3,
) -> ViewReport:
    """Flag views by their `view_consistency` scores.

    A view is an outlier when its score is below `min_score` (if given), or when the concept has at least
    `min_views` views and the score lies more than `mad_k` robust sigmas (1.4826 x MAD) and at least `min_gap`
    (cosine) below the median: the gap keeps a tight cluster's ordinary spread from being flagged. With a MAD of zero
    (views agreeing perfectly) only the absolute rule applies. NaN scores (a lone view) are never flagged.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if mad_k <= 0:
        raise FocusError(f"mad_k must be > 0, got {mad_k}")
    outliers = np.zeros(len(s), dtype=bool)
    reasons = [""] * len(s)
    valid = ~np.isnan(s)
    if min_score is not None:
        for i in np.flatnonzero(valid & (s < min_score)):
            outliers[i] = True
            reasons[i] = f"score {s[i]:.3f} < min_score {min_score:.3f}"
    if valid.sum() >= max(min_views, 2):
        med = float(np.median(s[valid]))
        sigma = 1.4826 * float(np.median(np.abs(s[valid] - med)))
        if sigma > 1e-9:
            limit = med - max(mad_k * sigma, min_gap)
            for i in np.flatnonzero(valid & (s < limit)):
                outliers[i] = True
                reasons[i] = (
                    reasons[i] or f"score {s[i]:.3f} is {(med - s[i]) / sigma:.1f} sigma below the median {med:.3f}"
                )
    return ViewReport(scores=s, outliers=outliers, reasons=tuple(reasons))


def view_report(embeddings: np.ndarray, **kwargs: float | int | None) -> ViewReport:
    """`flag_outliers(view_consistency(embeddings), **kwargs)`."""
    return flag_outliers(view_consistency(embeddings), **kwargs)  # type: ignore[arg-type]
