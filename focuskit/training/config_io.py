"""One parser for training configs that extend transformers' `TrainingArguments` (SFT) or TRL's `GRPOConfig` (GRPO).

A YAML file and `key=value` overrides fill the config class through `focuskit.core.config.from_dict`, the same
typed coercion every focuskit config uses (nested focuskit dataclasses such as `lora:` and `attention_loss:`
included). What this module adds for these ~120-field classes:

* an unknown top-level key fails naming the key and its closest known names ("did you mean ..."), instead of
  listing 120 names; a key focuskit used to call differently names its new (transformers/TRL) name;
* errors `TrainingArguments.__post_init__` raises (bf16 without a GPU, DeepSpeed not installed, ...) become one
  `ConfigError` naming the source, so the CLI prints one line instead of a traceback;
* `save_training_config` writes only the fields that differ from the class defaults, enums as their values and
  tokens never, in a form `load_training_config` reads back.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from focuskit.core.config import from_dict, read_config_data, to_dict
from focuskit.core.errors import ConfigError
from focuskit.core.io import atomic_write_text

T = TypeVar("T")

_SECRET_FIELDS = ("hub_token",)


def check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """Raise `ConfigError` for the first top-level key `cls` has no field for, with close matches or its new name."""
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    renamed: dict[str, str] = getattr(cls, "RENAMED_KEYS", {})
    for key in sorted(data):
        if key in fields:
            continue
        if key in renamed:
            raise ConfigError(f"key {key!r} in {where} is now {renamed[key]} ({cls.__name__})")
        close = difflib.get_close_matches(key, fields, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see docs/training.md for the keys"
        raise ConfigError(f"unknown key {key!r} in {where} ({cls.__name__}, {len(fields)} keys); {hint}")


def load_training_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read `path` (YAML) into the training config `cls`, then apply `key=value` overrides (dotted for sections)."""
    data, where = read_config_data(path, overrides)
    check_keys(cls, data, where)
    try:
        return from_dict(cls, data, where=where)
    except ImportError as exc:  # TrainingArguments: deepspeed=... without deepspeed installed, and the like
        raise ConfigError(f"{where}: {exc}".strip()) from None


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _declared_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def training_config_dict(config: Any) -> dict[str, Any]:
    """The config's init fields that differ from the class's declared defaults, YAML-safe (secrets left out).

    A class may name `DERIVED_KEYS` (a ClassVar): fields its `__post_init__` computes from others, which must not
    be written back (TRL's GRPOConfig derives `generation_batch_size` and `steps_per_generation` from each other
    and refuses both set).
    """
    derived = set(getattr(type(config), "DERIVED_KEYS", ()))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if not f.init or f.name in _SECRET_FIELDS or f.name in derived:
            continue
        value = _plain(getattr(config, f.name))
        default = _declared_default(f)
        if default is not dataclasses.MISSING and value == _plain(default):
            continue
        out[f.name] = value
    return out


def save_training_config(config: Any, path: str | Path) -> None:
    """Write `config` as YAML (atomically) so `load_training_config(type(config), path)` rebuilds it."""
    atomic_write_text(path, yaml.safe_dump(training_config_dict(config), sort_keys=False))


__all__ = ["check_keys", "load_training_config", "save_training_config", "training_config_dict"]
