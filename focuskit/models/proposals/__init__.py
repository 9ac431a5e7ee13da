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

from focuskit.core.errors import ConfigError

__all__ = ["Proposer", "create_proposer", "list_proposers"]


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


_BUILDERS: dict[str, Callable[..., Proposer]] = {"ssd": _ssd, "windows": _windows}


def list_proposers() -> list[str]:
    return list(_BUILDERS)


def create_proposer(name: str = "ssd", **kwargs: Any) -> Proposer:
    """Build a proposer by name; kwargs go to its constructor. Unknown names or options raise `ConfigError`."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown proposer {name!r}; available: {', '.join(list_proposers())}")
    try:
        return _BUILDERS[name](**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"proposer {name!r}: {exc}") from None
        raise
