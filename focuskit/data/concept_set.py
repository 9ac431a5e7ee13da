"""The concept-dataset type shared by personalization datasets (PerSeg, MyVLM, Yo'LLaVA, This-Is-My-Img, ...).

Every reader in `focuskit.data` that loads a personalization set returns a `ConceptDataset`; recognition evaluation
and `ConceptMemory.add` consume it, so neither knows which dataset it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from focuskit.core.box import Box


@dataclass(frozen=True)
class ReferenceView:
    """One reference photo of a concept, with the object's box and/or mask when the dataset gives one."""

    image: Path
    box: Box | None = None
    mask: Path | None = None
    """Path to a binary mask image (nonzero = object); loaded on demand because masks are large."""

    def load_mask(self) -> np.ndarray | None:
        if self.mask is None:
            return None
        from PIL import Image

        with Image.open(self.mask) as m:
            return np.asarray(m.convert("L")) > 0


@dataclass(frozen=True)
class Concept:
    """A named personal object: its reference views, test positives, and negatives by split."""

    name: str
    references: tuple[ReferenceView, ...]
    positives: tuple[ReferenceView, ...] = ()
    """Test images that contain the concept (boxes where the dataset has them)."""
    negatives: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    """Test images without the concept, keyed by split: 'hard' (same category), 'other', 'fake' where available."""
    context: str = ""


@dataclass(frozen=True)
class ConceptDataset:
    name: str
    root: Path
    concepts: tuple[Concept, ...]

    def concept(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(name)
