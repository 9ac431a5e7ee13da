"""focuskit: find one specific object in new images from a few boxed examples of it.

The public API re-exports the types every engine shares; engines live in `focuskit.localizers`.
"""

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

__version__ = "0.1.0"

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
