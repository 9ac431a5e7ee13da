"""PerSeg reader: personal objects with one mask per photo, as a `ConceptDataset` with tight boxes.

Layout (Personalize-SAM, github.com/ZrrSkywalker/Personalize-SAM, `persam.py` with `--ref_idx 00`)::

    <root>/Images/<object>/00.jpg, 01.jpg, ...
    <root>/Annotations/<object>/00.png, 01.png, ...     mask per image, same stem; nonzero = object

PerSAM's protocol uses image `00` as the one reference and segments every other image, so by default the first
`references` images (sorted by name) become the concept's reference views and the rest its positives. Every view
carries the tight box around its mask (pixels, x2/y2 exclusive) and the mask path. Images without a mask, with an
empty mask, or with a mask of another size are skipped and counted in the reader's report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.concept_set import Concept, ConceptDataset, ReferenceView
from focuskit.data.sequences import DataReport, list_images


def box_from_mask(mask: np.ndarray) -> Box | None:
    """Tight box around the nonzero pixels of an (H, W) mask, x2/y2 exclusive; `None` for an empty mask."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0 or len(ys) == 0:
        return None
    return Box(float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))


def read_mask(path: Path) -> np.ndarray:
    """A mask image as an (H, W) bool array (any nonzero channel is object)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from None


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError):
        return None


def read_perseg(root: str | Path, *, references: int = 1, report: DataReport | None = None) -> ConceptDataset:
    """Read PerSeg at `root`; the first `references` images of each object are its reference views."""
    root = Path(root)
    report = report if report is not None else DataReport()
    if references < 1:
        raise DatasetError(f"PerSeg needs at least 1 reference view per object, got references={references}")
    for sub in ("Images", "Annotations"):
        if not (root / sub).is_dir():
            raise DatasetError(
                f"{root} is not a PerSeg root: expected folder {root / sub} is missing "
                "(layout: <root>/Images/<object>/00.jpg and <root>/Annotations/<object>/00.png)"
            )
    concepts = []
    for obj_dir in sorted(p for p in (root / "Images").iterdir() if p.is_dir()):
        views: list[ReferenceView] = []
        for image in list_images(obj_dir):
            mask_path = root / "Annotations" / obj_dir.name / f"{image.stem}.png"
            if not mask_path.is_file():
                report.add("missing_mask", str(mask_path))
                continue
            size = _image_size(image)
            if size is None:
                report.add("unreadable_image", str(image))
                continue
            mask = read_mask(mask_path)
            if (mask.shape[1], mask.shape[0]) != size:
                report.add("mask_size_mismatch", f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}, image {size}")
                continue
            box = box_from_mask(mask)
            if box is None:
                report.add("empty_mask", str(mask_path))
                continue
            views.append(ReferenceView(image=image, box=box, mask=mask_path))
        if not views:
            report.add("object_without_usable_images", obj_dir.name)
            continue
        concepts.append(
            Concept(name=obj_dir.name, references=tuple(views[:references]), positives=tuple(views[references:]))
        )
    if not concepts:
        raise DatasetError(f"{root}: no PerSeg object has an image with a usable mask")
    return ConceptDataset(name="perseg", root=root, concepts=tuple(concepts))
