"""Run any `Localizer` over episodes at several shot counts and collect per-episode records and summaries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from focuskit.core.episode import Episode
from focuskit.core.errors import FocusError
from focuskit.eval.metrics import LocalizationSummary, episode_iou, summarize
from focuskit.localizers.base import Localizer


@dataclass
class EvalResult:
    summaries: list[LocalizationSummary]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[int, int] = field(default_factory=dict)
    """Per k, episodes with fewer than k supports (skipped for that k)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": [s.to_json() for s in self.summaries],
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "predictions": self.predictions,
        }


def _at_episode(exc: FocusError, where: str) -> FocusError:
    """The same kind of error, its message prefixed with the episode's file, line and id."""
    message = f"{where}: {exc}"
    try:
        return type(exc)(message)
    except TypeError:
        return FocusError(message)


def evaluate(
    localizer: Localizer,
    episodes: Sequence[Episode],
    shots: Sequence[int] | None = None,
    *,
    progress: bool = True,
) -> EvalResult:
    """Localize every episode at each k in `shots` (first k supports; episodes with fewer are skipped)."""
    shot_list = list(shots) if shots else sorted({ep.k for ep in episodes})
    summaries: list[LocalizationSummary] = []
    records: list[dict[str, Any]] = []
    skipped: dict[int, int] = {}
    total = sum(1 for k in shot_list for ep in episodes if ep.k >= k)
    bar = tqdm(total=total, desc=f"eval {localizer.name}", disable=not progress, unit="ep")
    for k in shot_list:
        usable = [ep for ep in episodes if ep.k >= k]
        skipped[k] = len(episodes) - len(usable)
        preds, truths = [], []
        start = time.perf_counter()
        # Engines that batch many episodes at once (the VLM shares support prefixes) get them all in one call.
        batched = getattr(localizer, "localize_episodes", None)
        answers = batched([ep.with_shots(k) for ep in usable]) if callable(batched) else None
        for i, ep in enumerate(usable):
            sub = ep.with_shots(k)
            try:
                pred = answers[i] if answers is not None else localizer.localize(sub.supports, sub.query_image)
            except FocusError as exc:
                bar.close()  # the error starts on its own line, not glued to the bar
                where = getattr(ep, "_where", None) or f"episode {ep.id!r}"  # set by the episode readers
                raise _at_episode(exc, f"{where}, k={k}") from None
            score = episode_iou(pred.box, ep.query_box)
            preds.append(pred.box)
            truths.append(ep.query_box)
            records.append(
                {
                    "id": ep.id,
                    "k": k,
                    "box": None if pred.box is None else pred.box.as_list(),
                    "score": round(float(pred.score), 4),
                    "iou": round(score, 4),
                }
            )
            bar.update(1)
        summaries.append(summarize(k, preds, truths, time.perf_counter() - start))
    bar.close()
    return EvalResult(summaries=summaries, predictions=records, skipped=skipped)
