"""Cache keys for support embeddings: an image's identity, cheap to compute and changed when its pixels are."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from focuskit.core.episode import ImageRef
from focuskit.core.image import load_image


def image_key(image: ImageRef | str) -> tuple[Any, ...]:
    """A cache key that changes when the image does: path + mtime + size for files, a pixel hash for arrays."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            stat = path.stat()
        except OSError:
            return ("path", str(path))  # load_image will raise the user-facing error
        return ("path", str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    img = load_image(image)
    digest = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
    return ("pixels", img.size, digest)
