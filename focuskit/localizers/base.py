"""The `Localizer` protocol and the registry engines are created from by name.

Every engine (training-free feature matching, template matching, an in-context VLM) answers the same call, so the
CLI, the evaluation runner, PeKit's retrieval stage and the server never branch on which engine they hold.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from focuskit.core.episode import ImageRef, Prediction, Support
from focuskit.core.errors import ConfigError


@runtime_checkable
class Localizer(Protocol):
    """Finds the supports' object in a query image, or says it is absent (`Prediction.box is None`)."""

    name: str

    def localize(self, supports: Sequence[Support], query_image: ImageRef) -> Prediction: ...


LocalizerFactory = Callable[..., Localizer]
_REGISTRY: dict[str, LocalizerFactory] = {}
# Engines register on import; names map to their modules so `create_localizer` imports only what is asked for
# (the VLM engine pulls in transformers, which the matching engine does not need).
_MODULES = {
    "matching": "focuskit.localizers.matching",
    "template": "focuskit.localizers.template",
    "vlm": "focuskit.localizers.vlm",
}


def register_localizer(name: str) -> Callable[[LocalizerFactory], LocalizerFactory]:
    def deco(factory: LocalizerFactory) -> LocalizerFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_localizers() -> list[str]:
    return sorted(set(_REGISTRY) | set(_MODULES))


def create_localizer(name: str, **kwargs: Any) -> Localizer:
    """Create a registered engine by name; kwargs go to its factory (a config's fields)."""
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown engine {name!r}; available: {', '.join(available_localizers())}")
    factory = _REGISTRY[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(
                f"engine {name!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(params) or 'none'}"
            )
    return factory(**kwargs)
