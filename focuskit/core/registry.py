"""`Registry`: names -> factories (or values), loaded lazily, with one error that lists the known names.

Localizers, encoders, proposers, segmenters, answer backends and dataset formats are all chosen by a name on the
command line or in a config. Each used to keep its own dict, import logic and error wording; one class gives them
the same behaviour:

* an entry is a factory or value registered directly, or a lazy `"package.module:attr"` target imported only when
  the name is asked for (asking for MobileNetV2 must not import transformers), or a bare `"package.module"` whose
  import registers the name itself (engines decorated with `@registry.register(name)`);
* an unknown name raises `ConfigError("unknown encoder 'x'; available: clip, dinov2, ...")`;
* `create(name, **options)` refuses options the factory does not take, naming them and the ones it does take.

    ENCODERS = Registry("encoder")
    ENCODERS.register_lazy("dinov2", "focuskit.models.encoders.hf:build_dinov2")

    @ENCODERS.register("mobilenetv2")
    def _mobilenetv2(**kwargs): ...

    ENCODERS.create("mobilenetv2", layer="s16")
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from focuskit.core.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping of names to registered entries; lazy entries are imported on first lookup."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        """What the entries are, for messages: 'encoder', 'dataset format' ..."""
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._order: dict[str, None] = {}
        """Names in the order first registered (built-ins before plug-ins; a default first)."""

    # --- registration ---------------------------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Register `entry` under `name`; without `entry`, a decorator doing so. A later registration replaces an
        earlier one (a user's plugin may override a built-in)."""
        if not name or not isinstance(name, str):
            raise ConfigError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def add(obj: T) -> T:
            self._entries[name] = obj
            self._lazy.pop(name, None)
            self._order.setdefault(name, None)
            return obj

        return add if entry is None else add(entry)

    def register_lazy(self, name: str, target: str) -> None:
        """Register `name` as `"package.module:attr"` (imported on first lookup) or `"package.module"` (whose import
        registers `name` itself)."""
        if name not in self._entries:
            self._lazy[name] = target
            self._order.setdefault(name, None)

    # --- lookup ---------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every known name in registration order, lazy ones included (nothing is imported)."""
        return list(self._order)

    def _resolve(self, name: str) -> T | None:
        if name in self._entries:
            return self._entries[name]
        target = self._lazy.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        loaded = importlib.import_module(module)
        if attr:
            self._entries[name] = getattr(loaded, attr)
        self._lazy.pop(name, None)
        if name not in self._entries:
            self._order.pop(name, None)
            raise ConfigError(f"{self.kind} {name!r}: importing {module} did not register it")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        entry = self._resolve(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._lazy)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def lookup(self, name: str) -> T:
        """The entry of `name`; an unknown name raises `ConfigError` listing the known ones."""
        entry = self._resolve(name) if isinstance(name, str) else None
        if entry is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}")
        return entry

    def create(self, name: str, /, **options: Any) -> Any:
        """Call the factory registered as `name` with `options`; options it does not take raise `ConfigError`."""
        factory: Any = self.lookup(name)
        if not callable(factory):
            raise ConfigError(f"{self.kind} {name!r} is not something to create")
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # builtins without a signature: let the call say
            params = None
        if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(options) - set(params))
            if unknown:
                takes = ", ".join(p for p in params if params[p].kind is not inspect.Parameter.VAR_POSITIONAL)
                raise ConfigError(
                    f"{self.kind} {name!r} does not take option(s) {', '.join(unknown)}; it takes: {takes or 'none'}"
                )
        try:
            return factory(**options)
        except TypeError as exc:
            # A factory forwarding **kwargs to a constructor: its "unexpected keyword" is the user's typo.
            if "unexpected keyword argument" in str(exc):
                raise ConfigError(f"{self.kind} {name!r}: {exc}") from None
            raise


__all__ = ["Registry"]
