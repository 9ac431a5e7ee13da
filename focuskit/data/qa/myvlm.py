"""MyVLM's captioning split (github.com/snap-research/MyVLM, README "Data Setup"; 29 objects, ~10 photos each).

Layout, as in the README: ``<root>/[data/]<concept>/*.jpg`` plus ``captions.json`` mapping each image file name to
its list of personalized target captions. MyVLM trains a concept on a few photos (`n_positive_samples`, 4 by
default) and captions the rest; here the first 4 photos by name are the references (the same split
`focuskit.data.concepts.read_myvlm` gives `eval-recognition`) and every other photo is one captioning item. The
reference captions are not needed (recall and CLIPScore need none) and are kept in `meta["captions"]` when present.
"""

from __future__ import annotations

import json
from pathlib import Path

from focuskit.core.errors import DatasetError
from focuskit.data.concepts import read_myvlm
from focuskit.data.qa.types import QAItem, QASet, no_items_error, unique_ids
from focuskit.data.sequences import DataReport

CAPTION_QUESTION = "Please caption this image."
"""MyVLM's LLaVA captioning prompt without the concept: the name must come from personalization, not the question."""


def _captions(concept_dir: Path, report: DataReport) -> dict[str, list[str]]:
    for name in ("captions.json", "captions_augmented.json"):
        f = concept_dir / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            report.add("unreadable_captions_json", str(f))
            return {}
        if isinstance(data, dict):
            return {str(k): [str(c) for c in v] for k, v in data.items() if isinstance(v, list)}
        report.add("unreadable_captions_json", str(f))
    return {}


def read_myvlm_captions(root: str | Path, *, references: int = 4) -> QASet:
    """One captioning item per non-reference photo of each MyVLM concept."""
    root = Path(root)
    report = DataReport()
    if references < 1:
        raise DatasetError(f"references must be >= 1, got {references}")
    ds = read_myvlm(root, references=references, report=report)
    items = []
    for concept in ds.concepts:
        captions = _captions(concept.references[0].image.parent, report)
        if not concept.positives:
            report.add("concept_without_test_photos", concept.name)
        for view in concept.positives:
            meta = {"captions": captions[view.image.name]} if view.image.name in captions else {}
            items.append(
                QAItem(
                    f"{concept.name}|{view.image.name}",
                    "caption",
                    view.image,
                    (concept.name,),
                    CAPTION_QUESTION,
                    meta=meta,
                )
            )
    if not items:
        raise no_items_error(root, report)
    unique_ids(items, root)
    return QASet(
        name="myvlm-captions", source=root, items=tuple(items), concepts_root=root, concepts_format="myvlm",
        report=report,
    )  # fmt: skip
