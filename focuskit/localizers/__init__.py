"""Engines that answer "where is the supports' object in this query image?" behind one protocol."""

from focuskit.localizers.base import Localizer, available_localizers, create_localizer, register_localizer

__all__ = ["Localizer", "available_localizers", "create_localizer", "register_localizer"]
