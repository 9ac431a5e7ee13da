"""`template`: multi-scale OpenCV template matching, the baseline users would otherwise reach for.

Each support crop is slid over the query at several scales with `cv2.matchTemplate` (normalised correlation
coefficient, on grayscale); the best position over supports and scales is the answer and its correlation the score.
It knows nothing about appearance beyond raw pixels, so it breaks under rotation, viewpoint and lighting change:
that is the point of having it, as the floor the learned-feature engine must clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from focuskit.core.box import Box
from focuskit.core.config import load_config
from focuskit.core.episode import ImageRef, Prediction, Support, open_image, validate_supports
from focuskit.core.errors import ConfigError
from focuskit.localizers.base import register_localizer


@dataclass
class TemplateConfig:
    """Options of the template-matching baseline."""

    tau: float = 0.65
    """Absent threshold on the best correlation (in [-1, 1]); below it the answer is "not present". 0.65 gave the
    best mIoU averaged over 1/2/4 shots on the built-in real-photo set (best range 0.64-0.67)."""
    scales: list[float] = field(default_factory=lambda: [0.5, 0.63, 0.8, 1.0, 1.25, 1.6, 2.0])
    """Template sizes tried, relative to the support box rescaled by the query/support image-size ratio."""
    work_size: int = 320
    """The query is downscaled so its longer side is at most this many pixels before matching (speed)."""
    min_template: int = 8
    """Templates smaller than this many pixels on a side are skipped: their correlation is noise."""

    def __post_init__(self) -> None:
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"template tau must be in [-1, 1] (a correlation), got {self.tau}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"template scales must be positive numbers, got {self.scales}")
        if self.work_size < 32:
            raise ConfigError(f"template work_size must be >= 32 pixels, got {self.work_size}")
        if self.min_template < 2:
            raise ConfigError(f"template min_template must be >= 2 pixels, got {self.min_template}")


def _gray(image: ImageRef, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """Grayscale float32 array, downscaled so the longer side is at most `max_side`; returns (array, scale)."""
    img = open_image(image)
    scale = 1.0 if max_side is None else min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    return np.asarray(img.convert("L"), dtype=np.float32), scale


class TemplateLocalizer:
    """Best normalised-correlation match of any support crop, at any of a few scales."""

    name = "template"

    def __init__(self, config: TemplateConfig | None = None) -> None:
        self.config = config or TemplateConfig()

    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction:
        supports = validate_supports(supports)
        query, qscale = _gray(query_image, self.config.work_size)
        qh, qw = query.shape
        best_score, best_box, tried = -np.inf, None, 0
        for support in supports:
            sup, _ = _gray(support.image)
            sh, sw = sup.shape
            b = support.box.clip((sw, sh))
            crop = sup[
                int(b.y1) : max(int(b.y1) + 1, int(np.ceil(b.y2))), int(b.x1) : max(int(b.x1) + 1, int(np.ceil(b.x2)))
            ]
            # Without other cues, assume the object keeps its size relative to the image.
            base = float(np.sqrt((qw * qh) / (sw * sh)))
            for s in self.config.scales:
                tw, th = round(crop.shape[1] * base * s), round(crop.shape[0] * base * s)
                if min(tw, th) < self.config.min_template or tw > qw or th > qh:
                    continue
                templ = cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA)
                if float(templ.std()) < 1e-3:
                    continue  # a flat template correlates with nothing
                res = cv2.matchTemplate(query, templ, cv2.TM_CCOEFF_NORMED)
                tried += 1
                _, score, _, (x, y) = cv2.minMaxLoc(res)
                if np.isfinite(score) and score > best_score:
                    best_score = float(score)
                    best_box = Box(x, y, x + tw, y + th).scale(1 / qscale)
        if best_box is None:
            return Prediction(None, 0.0, meta={"templates": tried, "reason": "no template fits the query"})
        meta = {"templates": tried}
        if best_score < self.config.tau:
            return Prediction(None, best_score, meta=meta)
        return Prediction(best_box, best_score, meta=meta)


@register_localizer("template")
def create_template(config: str | Path | TemplateConfig | None = None, tau: float | None = None) -> TemplateLocalizer:
    """The template baseline from an optional YAML config, with `tau` overriding the config's."""
    cfg = config if isinstance(config, TemplateConfig) else load_config(TemplateConfig, config)
    if tau is not None:
        cfg = TemplateConfig(**{**cfg.__dict__, "tau": float(tau)})
    return TemplateLocalizer(cfg)
