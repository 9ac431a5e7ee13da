"""One region matcher for every surface: `localize` (matching engine), `detect` (concept memory) and library search.

`MatcherConfig` (light, no torch) says which encoder, which proposal sources and which absent threshold per encoder
tag; `RegionMatcher` turns it into boxes, region embeddings, support-view embeddings and scores. Importing this
package imports no torch until `RegionMatcher` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from focuskit.matcher.config import DEFAULT_ENCODER_TAG, DEFAULT_TAU, MatcherConfig, tau_for

if TYPE_CHECKING:
    from focuskit.matcher.region import RegionMatcher, zoom_out

__all__ = ["DEFAULT_ENCODER_TAG", "DEFAULT_TAU", "MatcherConfig", "RegionMatcher", "tau_for", "zoom_out"]


def __getattr__(name: str) -> Any:
    if name in ("RegionMatcher", "zoom_out"):
        from focuskit.matcher import region

        return getattr(region, name)
    raise AttributeError(f"module 'focuskit.matcher' has no attribute {name!r}")
