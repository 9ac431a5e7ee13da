"""Segmenters behind one factory: `create_segmenter(name) -> Segmenter` (`mask_for_box`, `masks`).

"grabcut" (default) needs only OpenCV: GrabCut seeded by the box. "box" fills the box (the baseline). "sam" is
Segment Anything through transformers, and "grounded_sam" SAM whose whole-image masks start from GroundingDINO's
"object" boxes; both need a checkpoint the user brings. `create_grounding_dino()` builds the text-prompted box
detector on its own (category-prompted view extraction, "object" proposals).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from focuskit.core.errors import ConfigError
from focuskit.core.registry import Registry
from focuskit.models.segmenters.base import Segmenter, masks_for_boxes

__all__ = ["SEGMENTERS", "Segmenter", "create_grounding_dino", "create_segmenter", "list_segmenters", "masks_for_boxes"]


def _grabcut(**kwargs: Any) -> Segmenter:
    from focuskit.models.segmenters.grabcut import GrabCutSegmenter

    return GrabCutSegmenter(**kwargs)


def _box(**kwargs: Any) -> Segmenter:
    from focuskit.models.segmenters.box import BoxSegmenter

    return BoxSegmenter(**kwargs)


def _sam(**kwargs: Any) -> Segmenter:
    from focuskit.models.segmenters.sam import SamSegmenter

    return SamSegmenter(**kwargs)


def _grounded_sam(*, detector: Any | None = None, detector_kwargs: dict[str, Any] | None = None, **kwargs: Any):
    """SAM whose `masks(image)` segments GroundingDINO's "object" boxes (pass `detector=` or `detector_kwargs=`)."""
    from focuskit.models.segmenters.sam import SamSegmenter

    if "proposer" in kwargs:
        raise ConfigError("grounded_sam: the proposer is the GroundingDINO detector; pass detector= instead")
    seg = SamSegmenter(proposer=detector or create_grounding_dino(**(detector_kwargs or {})), **kwargs)
    seg.name = "grounded_sam"
    return seg


SEGMENTERS: Registry[Callable[..., Segmenter]] = Registry("segmenter")
for _name, _builder in (("grabcut", _grabcut), ("box", _box), ("sam", _sam), ("grounded_sam", _grounded_sam)):
    SEGMENTERS.register(_name, _builder)


def list_segmenters() -> list[str]:
    return SEGMENTERS.names()  # registration order: grabcut (the default) first


def create_segmenter(name: str = "grabcut", **kwargs: Any) -> Segmenter:
    """Build a segmenter by name; kwargs go to its constructor. Unknown names or options raise `ConfigError`."""
    return SEGMENTERS.create(name, **kwargs)


def create_grounding_dino(**kwargs: Any) -> Any:
    """The GroundingDINO text-prompted detector (`detect`, `best_box`, `propose`); kwargs go to its constructor."""
    from focuskit.models.segmenters.grounding_dino import GroundingDinoDetector

    try:
        return GroundingDinoDetector(**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"grounding_dino: {exc}") from None
        raise
