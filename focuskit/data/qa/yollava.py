"""Yo'LLaVA's visual QA: `yollava-data/yollava-visual-qa.json` (github.com/WisconsinAIVision/YoLLaVA).

Checked against the file in the repository (commit dd6e47a): 40 concepts, 170 two-option questions, nested as
``{"bo": {"./yollava-data/test/bo/0.png": {"question": "What is the primary color of <sks>'s fur?",
"options": {"A": "Brown", "B": "Grey"}, "correct_answer": "A"}}}``. Image paths are relative to the repository
root (the JSON's parent folder); the test images live in `yollava-data/test/<concept>/`, the reference images in
`yollava-data/train/<concept>/` (read by `focuskit.data.concepts.read_yollava`).
"""

from __future__ import annotations

from pathlib import Path

from focuskit.core.errors import DatasetError
from focuskit.data.qa.nested import read_nested_vqa
from focuskit.data.qa.types import QASet, no_items_error, unique_ids
from focuskit.data.sequences import DataReport

DEFAULT_FILE = "yollava-visual-qa.json"


def _find_file(path: Path) -> Path:
    if path.is_dir():
        for cand in (path / DEFAULT_FILE, path / "yollava-data" / DEFAULT_FILE):
            if cand.is_file():
                return cand
        raise DatasetError(f"{path}: no {DEFAULT_FILE} in it (nor in {path / 'yollava-data'})")
    return path


def _concepts_root(json_file: Path, media_root: Path | None) -> Path | None:
    for cand in (media_root, json_file.parent, json_file.parent / "yollava-data"):
        if cand is not None and (cand / "train").is_dir():
            return cand
    return None


def read_yollava_vqa(path: str | Path, *, media_root: str | Path | None = None) -> QASet:
    """The Yo'LLaVA VQA JSON (or a folder holding it: the repository root or `yollava-data/`)."""
    json_file = _find_file(Path(path))
    root = Path(media_root) if media_root is not None else None
    bases = [b for b in (root, json_file.parent.parent, json_file.parent) if b is not None]
    report = DataReport()
    items, aliases = read_nested_vqa(json_file, bases=bases, report=report)
    if not items:
        raise no_items_error(json_file, report)
    unique_ids(items, json_file)
    return QASet(
        name="yollava-vqa", source=json_file, items=tuple(items), aliases=aliases,
        concepts_root=_concepts_root(json_file, root), concepts_format="yollava", report=report,
    )  # fmt: skip
