"""Personalization concept folders (MyVLM, Yo'LLaVA, This-Is-My-Img, and a documented generic layout), all read
into the one `ConceptDataset` type so recognition evaluation and `ConceptMemory` never branch on the source.

Layouts, as used by the datasets' own code and by PeKit (github.com/vdorovatas/personalization_toolkit,
`loader.py` and its README "Dataset Folder Structure")::

    MyVLM (snap-research/MyVLM README "Data Setup"; 29 objects, ~10 photos each)
        <root>/[data/]<concept>/*.jpg          + captions.json (ignored here)
        The first `references` photos (sorted; default 4, MyVLM's `n_positive_samples`) are reference views,
        the rest positives. There are no negative splits: other concepts' photos serve as negatives.

    Yo'LLaVA (the released `yollava-data`; 40 subjects)
        <root>/train/<concept>/*.png           reference views
        <root>/test/<concept>/*.png            positives

    This-Is-My-Img (PeKit; 14 single concepts, 21 for multi-concept)
        <root>/[Single-concept|Multi-concept]/train/<concept>/*         reference views ("Reference Images" also read)
        <root>/[...]/test/<split>/<concept>/*                           split: Positive, Negative (Hard),
                                                                        Negative (Other), Fake ("Validation" also read)
        or <root>/[...]/test/<concept>/*                                positives (multi-concept pairs)

    Generic (for your own concepts)
        <root>/<concept>/references/*          reference views (required)
        <root>/<concept>/positives/*           optional: test photos that show the concept
        <root>/<concept>/negatives/<split>/*   optional: photos without it, by split (hard, other, fake, ...)
        <root>/<concept>/boxes.json            optional: {"references/a.jpg": [x1, y1, x2, y2], ...} in pixels
        <root>/<concept>/masks/<sub>/<stem>.png optional: a mask per view (sub = references or positives); gives the
                                               view's box when boxes.json has none
        <root>/<concept>/context.txt           optional: free text about the concept (kept in `Concept.context`)

None of the three public sets has boxes; only the generic layout (and PerSeg, `focuskit.data.perseg`) can feed
localization episodes. Empty concept folders are skipped and counted in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from focuskit.core.box import Box
from focuskit.core.errors import BoxError, DatasetError
from focuskit.data.concept_set import Concept, ConceptDataset, ReferenceView
from focuskit.data.perseg import box_from_mask, read_mask
from focuskit.data.sequences import DataReport, list_images

NEGATIVE_SPLITS = {"hard": "hard", "other": "other", "fake": "fake"}


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _first_existing(base: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (base / name).is_dir():
            return base / name
    return None


def _views(paths: list[Path]) -> tuple[ReferenceView, ...]:
    return tuple(ReferenceView(image=p) for p in paths)


def read_myvlm(root: str | Path, *, references: int = 4, report: DataReport | None = None) -> ConceptDataset:
    """MyVLM objects: the first `references` photos per concept are reference views, the rest positives."""
    root = Path(root)
    report = report if report is not None else DataReport()
    base = root / "data" if (root / "data").is_dir() else root
    if not base.is_dir():
        raise DatasetError(f"MyVLM root not found: {root}")
    concepts = []
    for concept_dir in _subdirs(base):
        images = list_images(concept_dir)
        if not images:
            report.add("empty_concept_folder", str(concept_dir))
            continue
        concepts.append(
            Concept(
                name=concept_dir.name,
                references=_views(images[:references]),
                positives=_views(images[references:]),
            )
        )
    if not concepts:
        raise DatasetError(
            f"{root} is not a MyVLM root: expected folders <root>/data/<concept>/ (or <root>/<concept>/) with .jpg "
            "photos, found none"
        )
    return ConceptDataset(name="myvlm", root=root, concepts=tuple(concepts))


def read_yollava(root: str | Path, *, report: DataReport | None = None) -> ConceptDataset:
    """Yo'LLaVA subjects: `train/<concept>` reference views, `test/<concept>` positives."""
    root = Path(root)
    report = report if report is not None else DataReport()
    train = root / "train"
    if not train.is_dir():
        raise DatasetError(
            f"{root} is not a Yo'LLaVA root: expected folder {train} is missing "
            "(layout: <root>/train/<concept>/*.png and <root>/test/<concept>/*.png)"
        )
    concepts = []
    for concept_dir in _subdirs(train):
        refs = list_images(concept_dir)
        if not refs:
            report.add("empty_concept_folder", str(concept_dir))
            continue
        positives = list_images(root / "test" / concept_dir.name)
        concepts.append(Concept(name=concept_dir.name, references=_views(refs), positives=_views(positives)))
    if not concepts:
        raise DatasetError(f"{root}: no concept folder under {train} holds images")
    return ConceptDataset(name="yollava", root=root, concepts=tuple(concepts))


def _split_key(folder_name: str) -> str | None:
    """'Positive' -> 'positive', 'Negative (Hard)' -> 'hard', 'Fake' -> 'fake'; anything else -> None."""
    low = folder_name.lower()
    if "positive" in low:
        return "positive"
    for word, key in NEGATIVE_SPLITS.items():
        if word in low:
            return key
    return None


def read_this_is_my(root: str | Path, *, variant: str = "single", report: DataReport | None = None) -> ConceptDataset:
    """This-Is-My-Img, `variant` 'single' (Single-concept) or 'multi' (Multi-concept)."""
    root = Path(root)
    report = report if report is not None else DataReport()
    if variant not in ("single", "multi"):
        raise DatasetError(f"This-Is-My-Img variant must be 'single' or 'multi', got {variant!r}")
    sub = {"single": "Single-concept", "multi": "Multi-concept"}[variant]
    base = root / sub if (root / sub).is_dir() else root
    ref_dir = _first_existing(base, ("train", "Reference Images"))
    if ref_dir is None:
        raise DatasetError(
            f"{root} is not a This-Is-My-Img root: expected folder {base / 'train'} (or 'Reference Images') is missing "
            f"(layout: <root>/{sub}/train/<concept>/ and <root>/{sub}/test/<split>/<concept>/)"
        )
    test_dir = _first_existing(base, ("test", "Validation"))
    positives: dict[str, list[Path]] = {}
    negatives: dict[str, dict[str, list[Path]]] = {}
    for folder in _subdirs(test_dir) if test_dir is not None else []:
        key = _split_key(folder.name)
        if key is None:
            # test/<concept>/ directly: positives (the multi-concept layout)
            positives.setdefault(folder.name, []).extend(list_images(folder))
            continue
        for concept_dir in _subdirs(folder):
            images = list_images(concept_dir)
            if key == "positive":
                positives.setdefault(concept_dir.name, []).extend(images)
            else:
                negatives.setdefault(concept_dir.name, {}).setdefault(key, []).extend(images)
    concepts = []
    for concept_dir in _subdirs(ref_dir):
        refs = list_images(concept_dir)
        if not refs:
            report.add("empty_concept_folder", str(concept_dir))
            continue
        negs = {k: tuple(v) for k, v in sorted(negatives.get(concept_dir.name, {}).items())}
        concepts.append(
            Concept(
                name=concept_dir.name,
                references=_views(refs),
                positives=_views(positives.get(concept_dir.name, [])),
                negatives=negs,
            )
        )
    if not concepts:
        raise DatasetError(f"{root}: no concept folder under {ref_dir} holds images")
    return ConceptDataset(name=f"this-is-my-{variant}", root=root, concepts=tuple(concepts))


def _read_boxes(path: Path) -> dict[str, Box]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: expected {{"references/a.jpg": [x1, y1, x2, y2], ...}}, got {type(data).__name__}')
    boxes = {}
    for key, value in data.items():
        if not isinstance(value, list) or len(value) != 4:
            raise DatasetError(f"{path}: box for {key!r} must be [x1, y1, x2, y2], got {value!r}")
        try:
            boxes[str(key)] = Box.from_xyxy([float(v) for v in value]).validate(where=f"{path}, {key}")
        except (TypeError, ValueError, BoxError) as exc:
            raise DatasetError(f"{path}: {exc}") from None
    return boxes


def _annotated_views(concept_dir: Path, sub: str, boxes: dict[str, Box], report: DataReport) -> list[ReferenceView]:
    views = []
    for image in list_images(concept_dir / sub):
        key = f"{sub}/{image.name}"
        mask = concept_dir / "masks" / sub / f"{image.stem}.png"
        box = boxes.get(key)
        mask_path = mask if mask.is_file() else None
        if box is None and mask_path is not None:
            box = box_from_mask(read_mask(mask_path))
            if box is None:
                report.add("empty_mask", str(mask_path))
        views.append(ReferenceView(image=image, box=box, mask=mask_path))
    return views


def read_concept_folders(root: str | Path, *, report: DataReport | None = None) -> ConceptDataset:
    """The generic layout in the module docstring: one folder per concept with `references/` and friends."""
    root = Path(root)
    report = report if report is not None else DataReport()
    if not root.is_dir():
        raise DatasetError(f"concept folder root not found: {root}")
    concepts = []
    for concept_dir in _subdirs(root):
        if not (concept_dir / "references").is_dir():
            report.add("folder_without_references", str(concept_dir))
            continue
        boxes = _read_boxes(concept_dir / "boxes.json")
        refs = _annotated_views(concept_dir, "references", boxes, report)
        if not refs:
            report.add("empty_concept_folder", str(concept_dir / "references"))
            continue
        positives = _annotated_views(concept_dir, "positives", boxes, report)
        negatives = {
            d.name: tuple(list_images(d)) for d in _subdirs(concept_dir / "negatives") if list_images(d)
        }  # fmt: skip
        context_file = concept_dir / "context.txt"
        context = context_file.read_text(encoding="utf-8").strip() if context_file.is_file() else ""
        concepts.append(
            Concept(
                name=concept_dir.name,
                references=tuple(refs),
                positives=tuple(positives),
                negatives=negatives,
                context=context,
            )
        )
    if not concepts:
        raise DatasetError(
            f"{root} is not a concept-folder root: expected folders like {root}/<concept>/references/ with images, "
            "found none"
        )
    return ConceptDataset(name="concepts", root=root, concepts=tuple(concepts))
