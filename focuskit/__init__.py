"""focuskit: find one specific object in new images from a few boxed examples of it.

The public API re-exports the types every engine shares; engines live in `focuskit.localizers`. Names are imported
on first use (PEP 562), so `import focuskit.cli.main` for `focuskit --help` or an argument error does not pay for
numpy and Pillow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from focuskit.core.lazy import lazy_attributes

__version__ = "0.1.0"

_WHERE = {
    "Box": "focuskit.core.box",
    "box_giou_batch": "focuskit.core.box",
    "box_iou_batch": "focuskit.core.box",
    "iou": "focuskit.core.box",
    "Detections": "focuskit.core.detections",
    "Episode": "focuskit.core.episode",
    "Prediction": "focuskit.core.episode",
    "Support": "focuskit.core.episode",
    "BoxError": "focuskit.core.errors",
    "BoxParseError": "focuskit.core.errors",
    "ConfigError": "focuskit.core.errors",
    "DatasetError": "focuskit.core.errors",
    "FocusError": "focuskit.core.errors",
    "ImageError": "focuskit.core.errors",
    "ModelError": "focuskit.core.errors",
    "load_image": "focuskit.core.image",
    "Localizer": "focuskit.localizers.base",
    "create_localizer": "focuskit.localizers.base",
}

if TYPE_CHECKING:
    from focuskit.core.box import Box, box_giou_batch, box_iou_batch, iou
    from focuskit.core.detections import Detections
    from focuskit.core.episode import Episode, Prediction, Support
    from focuskit.core.errors import (
        BoxError,
        BoxParseError,
        ConfigError,
        DatasetError,
        FocusError,
        ImageError,
        ModelError,
    )
    from focuskit.core.image import load_image
    from focuskit.localizers.base import Localizer, create_localizer


__getattr__ = lazy_attributes(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "Box",
    "BoxError",
    "BoxParseError",
    "ConfigError",
    "DatasetError",
    "Detections",
    "Episode",
    "FocusError",
    "ImageError",
    "Localizer",
    "ModelError",
    "Prediction",
    "Support",
    "__version__",
    "box_giou_batch",
    "box_iou_batch",
    "create_localizer",
    "iou",
    "load_image",
]
