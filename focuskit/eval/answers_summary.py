"""Scored answer records, summed up: per mode and kind the rate with its 95% Wilson interval (`summarize`), as
table rows (`summary_rows`) and as a grouped bar chart (`plot_summary`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focuskit.core.io import atomic_write_figure
from focuskit.eval.answers_scoring import wilson_interval

METRIC_NAMES = {"choice": "multiple-choice accuracy", "open": "open-ended accuracy (judge: yes)",
                "caption": "personalization recall"}  # fmt: skip


def summarize(records: list[dict[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode and kind: n, successes, the rate with its 95% Wilson interval, and kind-specific extras."""
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in records if r["mode"] == mode]
        by_kind: dict[str, Any] = {}
        for kind in ("choice", "open", "caption"):
            rs = [r for r in mine if r["kind"] == kind]
            if not rs:
                continue
            k = sum(int(r["score"]) for r in rs)
            lo, hi = wilson_interval(k, len(rs))
            entry: dict[str, Any] = {"n": len(rs), "successes": k, "rate": k / len(rs), "ci95": [lo, hi]}
            if kind == "choice":
                entry["unparsed"] = sum(1 for r in rs if r.get("choice") is None)
            if kind == "open":
                scores = [r["judge_score"] for r in rs if r.get("judge_score") is not None]
                entry["mean_score"] = sum(scores) / len(scores) if scores else None
                entry["unparsed"] = sum(1 for r in rs if r.get("judge_correct") is None)
                entry["judges"] = sorted({str(r.get("judge")) for r in rs})
            if kind == "caption":
                cs = [r["clipscore"] for r in rs if r.get("clipscore") is not None]
                entry["clipscore"] = sum(cs) / len(cs) if cs else None
            by_kind[kind] = entry
        if mode == "pekit" and mine:
            by_kind["recognized"] = sum(1 for r in mine if r.get("recognized")) / len(mine)
        summary[mode] = by_kind
    return summary


def summary_rows(summary: dict[str, Any], modes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(metric label, one cell per mode) for a table."""
    rows: list[tuple[str, list[str]]] = []
    for kind, label in METRIC_NAMES.items():
        if not any(kind in summary.get(m, {}) for m in modes):
            continue
        cells = []
        for m in modes:
            e = summary.get(m, {}).get(kind)
            cells.append("-" if e is None else f"{e['rate']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] n={e['n']}")
        rows.append((label, cells))
        if kind == "open":
            rows.append(("open-ended mean score (0-5)", [_fmt(summary.get(m, {}).get(kind, {}).get("mean_score"))
                                                         for m in modes]))  # fmt: skip
        if kind == "caption" and any(summary.get(m, {}).get(kind, {}).get("clipscore") is not None for m in modes):
            rows.append(("CLIPScore", [_fmt(summary.get(m, {}).get(kind, {}).get("clipscore")) for m in modes]))
        if kind in ("choice", "open"):
            rows.append((f"{kind}: unparsed", [str(summary.get(m, {}).get(kind, {}).get("unparsed", "-"))
                                               for m in modes]))  # fmt: skip
    if "pekit" in modes and "recognized" in summary.get("pekit", {}):
        rows.append(("pekit: concepts recognized", [_fmt(summary["pekit"]["recognized"]) if m == "pekit" else "-"
                                                     for m in modes]))  # fmt: skip
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def plot_summary(summary: dict[str, Any], modes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per mode, 95% Wilson intervals as error bars (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = [k for k in METRIC_NAMES if any(k in summary.get(m, {}) for m in modes)]
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(kinds) + 1), 3.6), dpi=110)
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(kinds))
    for j, mode in enumerate(modes):
        rates, errs = [], [[], []]
        for k in kinds:
            e = summary.get(mode, {}).get(k)
            r = e["rate"] if e else 0.0
            rates.append(r)
            errs[0].append(r - e["ci95"][0] if e else 0.0)
            errs[1].append(e["ci95"][1] - r if e else 0.0)
        bars = ax.bar(x + (j - (len(modes) - 1) / 2) * width, rates, width, yerr=errs, capsize=3, label=mode)
        for b, r in zip(bars, rates, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, 0.01, f"{r:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [METRIC_NAMES[k].split(" (")[0] for k in kinds], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% Wilson CI)")
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return atomic_write_figure(path, fig)


__all__ = ["METRIC_NAMES", "plot_summary", "summarize", "summary_rows"]
