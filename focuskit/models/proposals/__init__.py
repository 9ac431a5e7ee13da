"""Class-agnostic box proposals behind one factory: `create_proposer(name) -> Proposer`.

"ssd" is the packaged SSD-MobileNetV2 COCO detector at a low threshold; "windows" tiles boxes of several sizes and
aspect ratios over the image and needs no weights. Regions grown from a similarity map (`similarity`) and boxes
around points (`windows.boxes_around_points`) need the supports too, so they are functions the engines call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from focuskit.core.registry import Registry

__all__ = ["PROPOSERS", "Proposer", "create_proposer", "list_proposers"]


@runtime_checkable
class Proposer(Protocol):
    """Finds object-like regions: `propose(image)` -> (N, 4) xyxy pixel boxes, whatever the object class."""

    def propose(self, image: Image.Image) -> np.ndarray: ...


def _ssd(**kwargs: Any) -> Proposer:
    from focuskit.models.proposals.ssd import SSDProposer

    return SSDProposer(**kwargs)


def _windows(**kwargs: Any) -> Proposer:
    from focuskit.models.proposals.windows import WindowProposer

    return WindowProposer(**kwargs)


PROPOSERS: Registry[Callable[..., Proposer]] = Registry("proposer")
PROPOSERS.register("ssd", _ssd)
PROPOSERS.register("windows", _windows)


def list_proposers() -> list[str]:
    return PROPOSERS.names()


def create_proposer(name: str = "ssd", **kwargs: Any) -> Proposer:
    """Build a proposer by name; kwargs go to its constructor. Unknown names or options raise `ConfigError`."""
    return PROPOSERS.create(name, **kwargs)
