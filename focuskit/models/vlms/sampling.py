"""Validation of generation settings shared by every config that samples from a VLM (inference and GRPO)."""

from __future__ import annotations

from focuskit.core.errors import ConfigError


def check_sampling(*, temperature: float, top_p: float, top_k: int, max_new_tokens: int) -> None:
    """Raise `ConfigError` naming the first out-of-range setting, before a model is loaded."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0, got {top_k}")
