"""The `Localizer` protocol and the registry engines are created from by name.

Every engine (training-free feature matching, template matching, an in-context VLM) answers the same call, so the
CLI, the evaluation runner, PeKit's retrieval stage and the server never branch on which engine they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from focuskit.core.episode import ImageRef, Prediction, Support
from focuskit.core.registry import Registry


@runtime_checkable
class Localizer(Protocol):
    """Finds the supports' object in a query image, or says it is absent (`Prediction.box is None`)."""

    name: str

    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction: ...


LocalizerFactory = Callable[..., Localizer]
LOCALIZERS: Registry[LocalizerFactory] = Registry("engine")
"""Engines register on import (`@register_localizer(name)`); names map to their modules so `create_localizer`
imports only what is asked for (the VLM engine pulls in transformers, which the matching engine does not need)."""
for _name in ("matching", "template", "vlm"):
    LOCALIZERS.register_lazy(_name, f"focuskit.localizers.{_name}")


def register_localizer(name: str) -> Callable[[LocalizerFactory], LocalizerFactory]:
    return LOCALIZERS.register(name)


def available_localizers() -> list[str]:
    return LOCALIZERS.names()


def create_localizer(name: str, **kwargs: Any) -> Localizer:
    """Create a registered engine by name; kwargs go to its factory (a config's fields)."""
    return LOCALIZERS.create(name, **kwargs)
