"""Localization metrics with the papers' strict convention.

An episode scores its IoU with the ground truth; a miss (no box where the target is present) scores 0, and so does
a box where the target is absent. A correct "absent" scores 1. mIoU is the mean over episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from focuskit.core.box import Box, iou


def episode_iou(pred: Box | None, truth: Box | None) -> float:
    return iou(pred, truth)


@dataclass(frozen=True)
class LocalizationSummary:
    k: int
    episodes: int
    miou: float
    present: int
    absent: int
    absent_rejected: float | None
    """Fraction of absent-target episodes answered "absent" (None when there are none)."""
    present_rejected: float | None
    """Fraction of present-target episodes wrongly answered "absent"."""
    acc_at_50: float
    episodes_per_s: float

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def summarize(k: int, preds: Sequence[Box | None], truths: Sequence[Box | None], seconds: float) -> LocalizationSummary:
    ious = np.array([episode_iou(p, t) for p, t in zip(preds, truths, strict=True)], dtype=np.float64)
    present = [t is not None for t in truths]
    n_present = int(sum(present))
    n_absent = len(truths) - n_present
    absent_rej = (
        sum(1 for p, t in zip(preds, truths, strict=True) if t is None and p is None) / n_absent if n_absent else None
    )
    present_rej = (
        sum(1 for p, t in zip(preds, truths, strict=True) if t is not None and p is None) / n_present
        if n_present
        else None
    )
    return LocalizationSummary(
        k=k,
        episodes=len(truths),
        miou=float(ious.mean()) if len(ious) else 0.0,
        present=n_present,
        absent=n_absent,
        absent_rejected=absent_rej,
        present_rejected=present_rej,
        acc_at_50=float((ious >= 0.5).mean()) if len(ious) else 0.0,
        episodes_per_s=len(truths) / seconds if seconds > 0 else float("inf"),
    )
