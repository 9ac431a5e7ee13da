"""What `detect` and `ask` print and write per image: the human lines (detections, near misses), the export record
and the annotated drawing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from focuskit.core.detections import Detections
    from focuskit.exports import ImageResult
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.config import PeKitConfig


def describe(dets: Detections, tau: float) -> list[str]:
    """Human lines for one image: each detection, then the near misses ("cup 0.48, below 0.56")."""
    lines = []
    for i, (box, score, name) in enumerate(dets):
        coords = ",".join(f"{c:.0f}" for c in box.to_xyxy())
        mask = "" if dets.masks is None else f" mask {int(dets.masks[i].sum())} px"
        lines.append(f"{name}: box {coords} score {score:.3f}{mask}")
    misses = dets.near_misses(tau)
    if not lines:
        lines.append("no concept found")
    if misses:
        listed = ", ".join(f"{n} {s:.2f}" for n, s in misses[:5])
        lines.append(f"near misses: {listed} (below tau {tau:.2f})")
    return lines


def image_result(path: Path, image: Any, dets: Detections, extra: dict[str, Any] | None = None) -> ImageResult:
    from focuskit.exports import ImageResult

    return ImageResult(str(path), image.width, image.height, dets, dict(dets.best_scores), dict(extra or {}))


def draw_name(path: Path, taken: set[str]) -> str:
    """A file name in --draw-dir for `path`: its own name, made unique when two inputs share it."""
    suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, i = f"{path.stem}{suffix}", 1
    while name in taken:
        i += 1
        name = f"{path.stem}_{i}{suffix}"
    taken.add(name)
    return name


def drawing(image: Any, dets: Detections, mem: ConceptMemory, cfg: PeKitConfig) -> Any:
    from focuskit.personalize.prompting import annotate, assign_colors

    return annotate(image, dets, assign_colors(mem, list(dets.names)), template=cfg.prompt, draw_masks=True)


__all__ = ["describe", "draw_name", "drawing", "image_result"]
