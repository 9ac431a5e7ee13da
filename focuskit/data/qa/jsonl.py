"""focuskit's own QA file: one JSON object per line, for your own concepts (and for converted benchmarks).

::

    {"id": "q1", "image": "photos/bruno_park.jpg", "concepts": ["Bruno"], "question": "What is Bruno holding?",
     "options": {"A": "A ball", "B": "A stick"}, "correct": "B"}
    {"id": "q2", "video": "clips/walk.mp4", "concepts": ["Bruno"], "question": "Where is Bruno going?",
     "answer": "To the park"}
    {"id": "c1", "image": "photos/bruno_sofa.jpg", "concepts": ["Bruno"], "kind": "caption"}

Paths are relative to the file. `kind` is inferred: options -> choice, answer -> open, else it must be "caption"
(whose question defaults to MyVLM's "Please caption this image."). `aliases` (object: name -> [other names]) may be
given on any line. `id` defaults to the line number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from focuskit.core.errors import DatasetError
from focuskit.data.qa.myvlm import CAPTION_QUESTION
from focuskit.data.qa.types import (
    KINDS,
    QAItem,
    QASet,
    check_correct,
    check_media_suffix,
    no_items_error,
    parse_options,
    resolve_media,
    unique_ids,
)
from focuskit.data.sequences import DataReport


def _entry(obj: dict[str, Any], where: str, base: list[Path], report: DataReport, line: int) -> QAItem | None:
    rel = obj.get("image", obj.get("video"))
    if not isinstance(rel, str) or not rel.strip():
        raise DatasetError(f'{where}: needs "image" or "video" (a path relative to the file)')
    raw = obj.get("concepts", obj.get("concept"))
    concepts = [raw] if isinstance(raw, str) else raw
    if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) and c.strip() for c in concepts):
        raise DatasetError(f'{where}: "concepts" must be a non-empty list of names, got {raw!r}')
    names = tuple(c.strip() for c in concepts)
    kind = obj.get("kind")
    if kind is not None and kind not in KINDS:
        raise DatasetError(f'{where}: "kind" must be one of {", ".join(KINDS)}, got {kind!r}')
    if kind is None:
        kind = "choice" if "options" in obj else "open" if "answer" in obj else None
    if kind is None:
        raise DatasetError(f'{where}: give "options" + "correct", an "answer", or "kind": "caption"')
    question = obj.get("question", CAPTION_QUESTION if kind == "caption" else None)
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f'{where}: "question" must be non-empty text, got {question!r}')
    media = resolve_media(rel, base)
    if media is None:
        report.add("missing_media", f"{rel} ({where})")
        return None
    check_media_suffix(media, where)
    item_id = str(obj.get("id", f"line{line}"))
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    if kind == "choice":
        options = parse_options(obj.get("options"), where)
        correct = check_correct(obj.get("correct", obj.get("correct_answer")), options, where)
        return QAItem(item_id, "choice", media, names, question.strip(), options=options, correct=correct, meta=meta)
    if kind == "open":
        answer = obj.get("answer")
        if not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise DatasetError(f'{where}: an open question needs a non-empty "answer"')
        return QAItem(item_id, "open", media, names, question.strip(), answer=str(answer).strip(), meta=meta)
    return QAItem(item_id, "caption", media, names, question.strip(), meta=meta)


def read_qa_jsonl(path: str | Path, *, media_root: str | Path | None = None) -> QASet:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"QA file not found: {path}")
    base = [Path(media_root)] if media_root is not None else []
    base.append(path.parent)
    report = DataReport()
    items: list[QAItem] = []
    aliases: dict[str, tuple[str, ...]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; expected a QA JSONL file") from None
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
        al = obj.get("aliases", {})
        if not isinstance(al, dict) or not all(isinstance(v, list) for v in al.values()):
            raise DatasetError(f'{where}: "aliases" must map names to lists of names, got {al!r}')
        for k, v in al.items():
            aliases[str(k)] = tuple(dict.fromkeys((*aliases.get(str(k), ()), *(str(x) for x in v))))
        item = _entry(obj, where, base, report, n)
        if item is not None:
            items.append(item)
    if not items:
        raise no_items_error(path, report)
    unique_ids(items, path)
    return QASet(name=path.stem, source=path, items=tuple(items), aliases=aliases, report=report)
