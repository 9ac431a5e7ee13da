"""Report of a toy run: per-row means over seeds, paired differences with standard errors, learning-curve plot.

Paired differences: for rows A and B, d_i = (A's IoU - B's IoU) on held-out episode i, averaged over k and over
the seeds both rows ran; the standard error is sd(d) / sqrt(n episodes). `seed_se` is the standard error of the
per-seed mean differences (the spread from training randomness; with 3 seeds a rough figure).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from focuskit.core.io import atomic_write_figure

LABELS = {
    "locate": "locate-pretrained only",
    "base": "base (locate-pretrained, no instance training)",
    "grpo": "+ GRPO",
    "sft": "+ SFT",
    "sft_grpo": "+ SFT + GRPO",
    "sft_attn_first5": "+ SFT + Attn (first k)",
    "sft_attn_first5_grpo": "+ SFT + Attn (first k) + GRPO",
    "sft_attn_last5": "+ SFT + Attn (last k)",
    "sft_attn_all": "+ SFT + Attn (all layers)",
}
COMPARISONS = [
    ("base", "locate"), ("sft", "base"), ("sft_attn_first5", "sft"), ("sft_attn_last5", "sft"), ("sft_attn_all", "sft"),
    ("sft_attn_first5", "sft_attn_last5"), ("sft_attn_first5", "sft_attn_all"), ("sft_grpo", "sft"),
    ("sft_attn_first5_grpo", "sft_attn_first5"), ("grpo", "base"), ("sft_grpo", "grpo"),
]  # fmt: skip


def _k(d: dict[Any, Any], k: int) -> Any:
    return d.get(k, d.get(str(k)))


def by_name(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r["name"]].append(r)
    return dict(out)


def summarize(rows: list[dict[str, Any]], shots: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Mean over seeds of each metric, plus the seeds' standard error of the k=max pick rate."""
    out = {}
    kmax = max(shots)
    for name, runs in by_name(rows).items():
        s: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs)}
        for key in ("miou", "pick_rate", "area_ratio", "iou_any"):  # a column some run lacks is nan ("-"), not guessed
            have = all(key in r for r in runs)
            s[key] = {k: statistics.fmean(_k(r[key], k) for r in runs) if have else math.nan for k in shots}
        shares = [r["attention_shares"] for r in runs if r.get("attention_shares")]
        s["attention_shares"] = {n: statistics.fmean(x[n] for x in shares) for n in shares[0]} if shares else {}
        picks = [_k(r["pick_rate"], kmax) for r in runs]
        s["pick_seed_se"] = statistics.stdev(picks) / math.sqrt(len(picks)) if len(picks) > 1 else math.nan
        s["mean_miou"] = statistics.fmean(s["miou"].values())
        s["train_seconds"] = statistics.fmean(r.get("seconds", 0.0) for r in runs)
        out[name] = s
    return out


def _episode_values(run: dict[str, Any], shots: tuple[int, ...], key: str) -> list[float]:
    per_k = [_k(run[key], k) for k in shots]
    return [statistics.fmean(v) for v in zip(*per_k, strict=True)]


def paired(rows: list[dict[str, Any]], a: str, b: str, shots: tuple[int, ...], key: str) -> dict[str, float] | None:
    """Mean paired difference a - b (per episode, averaged over k and common seeds) and its standard errors."""
    runs = by_name(rows)
    if a not in runs or b not in runs:
        return None
    b_by_seed = {r["seed"]: r for r in runs[b]}
    a_by_seed = {r["seed"]: r for r in runs[a]}
    if len(runs[b]) == 1 < len(runs[a]):  # base: one run, paired with every seed of a
        b_by_seed = {s: runs[b][0] for s in a_by_seed}
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    if not seeds:
        return None
    per_seed = []
    diffs = None
    for s in seeds:
        d = [x - y for x, y in zip(_episode_values(a_by_seed[s], shots, key),
                                   _episode_values(b_by_seed[s], shots, key), strict=True)]  # fmt: skip
        per_seed.append(statistics.fmean(d))
        diffs = d if diffs is None else [u + v for u, v in zip(diffs, d, strict=True)]
    assert diffs is not None
    diffs = [v / len(seeds) for v in diffs]
    n = len(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.nan
    seed_se = statistics.stdev(per_seed) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else math.nan
    return {"diff": statistics.fmean(diffs), "se": se, "seed_se": seed_se, "seeds": len(seeds), "episodes": n}


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def markdown(result: dict[str, Any]) -> str:
    preset = result["preset"]
    shots = tuple(preset["shots"])
    kmax = max(shots)
    summary = summarize(result["rows"], shots)
    head = ("| row | seeds | " + " | ".join(f"mIoU k={k}" for k in shots)
            + f" | target picked (k={kmax}) | IoU either object | box area / truth"
            + " | attention: query / support boxes / support images | train+eval s |\n|---|---:|"
            + "---:|" * (len(shots) + 5))  # fmt: skip
    lines = [head]
    order = list(LABELS) + sorted(n for n in summary if n not in LABELS)
    for name in order:
        if name not in summary:
            continue
        s = summary[name]
        se = f" ± {100 * s['pick_seed_se']:.1f}" if not math.isnan(s["pick_seed_se"]) else ""
        cells = [f"{100 * s['miou'][k]:.1f}" for k in shots]
        a = s["attention_shares"]
        parts = ("query_image", "support_boxes", "support_images")
        attn = " / ".join(f"{100 * a[n]:.0f}%" for n in parts) if a else "-"
        cells += [f"{100 * s['pick_rate'][kmax]:.1f}%{se}", _percent(s["iou_any"][kmax]),
                  f"{s['area_ratio'][kmax]:.2f}", attn, f"{s['train_seconds']:.0f}"]  # fmt: skip
        label = "base (locate + match pretraining)" if name == "base" and preset.get("match") else None
        lines.append(f"| {label or LABELS.get(name, name)} | {len(s['seeds'])} | " + " | ".join(cells) + " |")
    diff_lines = ["| A - B | mIoU (points, mean over k) | pick rate (points) | seeds |", "|---|---:|---:|---:|"]
    names = set(summary)
    comps = [c for c in COMPARISONS if c[0] in names and c[1] in names]
    comps += [(n, "sft_attn_first5") for n in sorted(names) if n.startswith("grid_") and "sft_attn_first5" in names]
    for a, b in comps:
        m = paired(result["rows"], a, b, shots, "per_episode_iou")
        p = paired(result["rows"], a, b, (kmax,), "per_episode_pick")
        if m and p:
            diff_lines.append(f"| {a} - {b} | {100 * m['diff']:+.1f} ± {100 * m['se']:.1f} | "
                              f"{100 * p['diff']:+.1f} ± {100 * p['se']:.1f} | {m['seeds']} |")  # fmt: skip
    return "\n".join([*lines, "", "Paired differences (± one standard error over held-out episodes):", "",
                      *diff_lines, ""])  # fmt: skip


def plot_curves(result: dict[str, Any], path: Path) -> Path | None:
    """Training loss of every stage, and held-out pick rate / mIoU at the SFT row's checkpoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve_rows = [r for r in result["rows"] if r.get("learning_curve")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    offset = 0  # pretraining stages end to end; a base built earlier (`--base`) has no curves here
    for stage in result.get("pretrain", []):
        if stage["curve_steps"]:
            steps = [offset + s for s in stage["curve_steps"]]
            axes[0].plot(steps, stage["curves"]["lm_loss"], label=f"{stage['name']} (base)")
            offset = steps[-1]
    for r in result["rows"]:
        if r["name"] in ("sft", "sft_attn_first5") and r["seed"] == result["preset"]["seeds"][0] and "curves" in r:
            axes[0].plot([offset + s for s in r["curve_steps"]], r["curves"]["lm_loss"], label=r["name"])
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("LM loss")
    axes[0].legend()
    if curve_rows:
        pts = curve_rows[0]["learning_curve"]
        base = next((r for r in result["rows"] if r["name"] == "base"), None)
        if base is not None:  # step 0 of the SFT row is the base it starts from
            pts = [{"step": 0, "pick_rate": base["pick_rate"], "miou": base["miou"]}, *pts]
        steps = [offset + p["step"] for p in pts]
        k = max(result["preset"]["shots"])
        axes[1].plot(steps, [100 * _k(p["pick_rate"], k) for p in pts], "o-", label=f"target picked % (k={k})")
        axes[1].plot(steps, [100 * _k(p["miou"], k) for p in pts], "s-", label=f"mIoU (k={k})")
        axes[1].axhline(100 / result["preset"]["objects"], color="gray", ls="--", label="chance pick")
        axes[1].set_xlabel("step (pretraining + SFT)" if offset else "SFT step (from the given base)")
        axes[1].legend()
    axes[1].set_title("held-out, SFT row")
    fig.tight_layout()
    return atomic_write_figure(path, fig, dpi=110)
