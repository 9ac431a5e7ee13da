"""What an episode build made and skipped (`EpisodeStats`), as text lines, JSON and a PNG of box sizes and
objects per image (`plot_statistics`), for `focuskit data episodes --stats`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.io import atomic_write_figure
from focuskit.data.sequences import DataReport


@dataclass
class EpisodeStats:
    """What was built and what was skipped, for printing and for the JSON/PNG outputs."""

    source: str
    units: int = 0
    """Sequences (or concepts) considered after partition and limit."""
    episodes: dict[int, int] = field(default_factory=dict)
    negatives: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, Counter[str]] = field(default_factory=dict)
    """Per k: sequences/concepts that gave no episode, by reason."""
    report: DataReport = field(default_factory=DataReport)
    """Frames and files the readers and the builder skipped or repaired, by reason."""
    objects_per_image: Counter[int] = field(default_factory=Counter)
    """Annotated objects (target + distractors) in each positive query image."""
    box_rel_sizes: list[float] = field(default_factory=list)
    """sqrt(box area / image area) of every distinct target box used, where the image size is known."""
    box_px_sizes: list[float] = field(default_factory=list)
    """sqrt(box area) in pixels of every distinct target box used."""

    def to_json(self) -> dict[str, Any]:
        def hist(values: list[float], bins: Sequence[float]) -> dict[str, Any]:
            counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(bins))
            return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}

        return {
            "source": self.source,
            "units": self.units,
            "episodes": {str(k): v for k, v in self.episodes.items()},
            "negatives": {str(k): v for k, v in self.negatives.items()},
            "skipped": {str(k): dict(c) for k, c in self.skipped.items()},
            "issues": self.report.to_json(),
            "objects_per_image": {str(n): c for n, c in sorted(self.objects_per_image.items())},
            "box_relative_size": hist(self.box_rel_sizes, np.linspace(0, 1, 11)),
            "box_pixel_size": hist(self.box_px_sizes, [0, 16, 32, 64, 128, 256, 512, 1024, 1e9]),
        }

    def lines(self) -> list[str]:
        out = [f"{self.source}: {self.units} sequence(s)/concept(s) considered"]
        for k in sorted(self.episodes):
            neg = self.negatives.get(k, 0)
            skipped = self.skipped.get(k, Counter())
            line = f"k={k}: {self.episodes[k]} episode(s)" + (f" + {neg} negative(s)" if neg else "")
            if skipped:
                line += "; skipped " + ", ".join(f"{n} ({r})" for r, n in sorted(skipped.items()))
            out.append(line)
        if self.objects_per_image:
            total = sum(self.objects_per_image.values())
            mean = sum(n * c for n, c in self.objects_per_image.items()) / total
            dist = ", ".join(f"{n}: {c}" for n, c in sorted(self.objects_per_image.items()))
            out.append(f"objects per query image: mean {mean:.2f} ({dist})")
        if self.box_rel_sizes:
            q = np.percentile(self.box_rel_sizes, [10, 50, 90])
            out.append(f"box size sqrt(box/image): p10 {q[0]:.3f}, median {q[1]:.3f}, p90 {q[2]:.3f}")
        if self.report:
            out.append("skipped or repaired: " + "; ".join(self.report.lines()))
        return out


def plot_statistics(stats: EpisodeStats, path: str | Path) -> None:
    """Write a PNG with the box-size histogram and the objects-per-image counts (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_size, ax_obj = fig.subplots(1, 2)
    if stats.box_rel_sizes:
        ax_size.hist(stats.box_rel_sizes, bins=np.linspace(0, 1, 21), color="#3274a1")
        ax_size.set_xlabel("target box size, sqrt(box area / image area)")
    else:
        ax_size.hist(stats.box_px_sizes or [0.0], bins=20, color="#3274a1")
        ax_size.set_xlabel("target box size, sqrt(box area) in pixels")
    ax_size.set_ylabel("boxes")
    ax_size.set_title(f"{stats.source}: {len(stats.box_px_sizes)} target boxes")
    counts = sorted(stats.objects_per_image.items())
    ax_obj.bar([str(n) for n, _ in counts], [c for _, c in counts], color="#e1812c")
    ax_obj.set_xlabel("annotated objects in the query image")
    ax_obj.set_ylabel("episodes")
    ax_obj.set_title("objects per image")
    for ax in (ax_size, ax_obj):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    atomic_write_figure(path, fig)
