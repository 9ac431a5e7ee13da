"""The image / video extension table, kept at this path for code that imports it from here.

The table itself lives in `focuskit.core.media`, shared with the photo library and the dataset loaders.
"""

from __future__ import annotations

from focuskit.core.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image, is_video

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "is_image", "is_video"]
