"""The nested VQA JSON shared by Yo'LLaVA and This-Is-My-Img: concept -> media path -> question.

::

    {"<concept>": {"<path>": {"question": "What is <sks> wearing?",
                              "options": {"A": "A hat", "B": "A scarf"}, "correct_answer": "A"}}}

Yo'LLaVA (`yollava-data/yollava-visual-qa.json`, WisconsinAIVision/YoLLaVA) has only multiple-choice entries; the
This-Is-My-Img files as read by PeKit's `loader.py` (vdorovatas/personalization_toolkit) use the same nesting and
also carry open-ended entries (`"answer"` instead of options). A flat variant without the concept level, as in
Yo'LLaVA's README (`{"<path>": {...}}`), is read too; the concept is then the image's folder name. `<sks>` in a
question is replaced by the concept's display name. Paths are tried under the file's folder, its parent and the
given media root (see `resolve_media`); entries whose media is missing are skipped and counted, as PeKit does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from focuskit.core.errors import DatasetError
from focuskit.data.qa.types import (
    QAItem,
    check_correct,
    check_media_suffix,
    fill_name,
    load_json,
    media_candidates,
    parse_options,
    resolve_media,
)
from focuskit.data.sequences import DataReport

NameFn = Callable[[str], tuple[tuple[str, ...], dict[str, tuple[str, ...]]]]
"""Raw concept key -> (display names of the concepts it stands for, display name -> aliases)."""


def _single(key: str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    return (key,), {}


def _is_entry(value: Any) -> bool:
    return isinstance(value, dict) and "question" in value


def read_nested_vqa(
    path: Path,
    *,
    bases: list[Path],
    names: NameFn = _single,
    report: DataReport,
    id_prefix: str = "",
) -> tuple[list[QAItem], dict[str, tuple[str, ...]]]:
    """Items of one nested VQA file and the aliases of their concepts."""
    data = load_json(path, "VQA file")
    if not isinstance(data, dict) or not data:
        raise DatasetError(
            f'{path}: expected an object {{"<concept>": {{"<image path>": {{"question": ..., "options": ..., '
            f'"correct_answer": ...}}}}}}, got {type(data).__name__ if data else "an empty object"}'
        )
    if all(_is_entry(v) for v in data.values()):  # flat: {"<path>": {...}}
        groups: list[tuple[str | None, dict[str, Any]]] = [(None, data)]
    else:
        groups = []
        for key, value in data.items():
            if not isinstance(value, dict):
                raise DatasetError(
                    f"{path}: concept {key!r} must map image paths to questions, got {type(value).__name__}"
                )
            groups.append((key, value))
    items: list[QAItem] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for key, entries in groups:
        for rel, entry in entries.items():
            where = f"{path}, {key + ' / ' if key else ''}{rel}"
            if not _is_entry(entry):
                raise DatasetError(f'{where}: expected an object with "question", got {str(entry)[:80]!r}')
            raw_key = key if key is not None else Path(rel).parent.name
            concepts, more = names(raw_key)
            for name, al in more.items():
                aliases[name] = tuple(dict.fromkeys((*aliases.get(name, ()), *al)))
            media = resolve_media(rel, bases)
            if media is None:
                tried = ", ".join(str(c) for c in media_candidates(rel, bases)[:3])
                report.add("missing_media", f"{rel} (tried {tried}, ...)")
                continue
            check_media_suffix(media, where)
            items.append(_item(entry, where, f"{id_prefix}{raw_key}|{rel}", media, concepts))
    return items, aliases


def _item(entry: dict[str, Any], where: str, item_id: str, media: Path, concepts: tuple[str, ...]) -> QAItem:
    question = entry["question"]
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f'{where}: "question" must be non-empty text, got {question!r}')
    # PeKit fills <sks> with the (first) concept's name; in multi-concept files the names are written out.
    question = fill_name(question.strip(), concepts[0])
    meta = {k: v for k, v in entry.items() if k not in ("question", "options", "correct_answer", "answer")}
    if "options" in entry:
        options = parse_options(entry["options"], where)
        correct = check_correct(entry.get("correct_answer"), options, where)
        return QAItem(item_id, "choice", media, concepts, question, options=options, correct=correct, meta=meta)
    answer = entry.get("answer", entry.get("correct_answer"))
    if not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise DatasetError(
            f'{where}: an entry needs "options" + "correct_answer" (multiple choice) or "answer" (open-ended)'
        )
    answer_text = fill_name(str(answer).strip(), concepts[0])
    return QAItem(item_id, "open", media, concepts, question, answer=answer_text, meta=meta)
