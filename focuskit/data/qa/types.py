"""`QAItem` and `QASet`: personalized question answering and captioning items, whatever benchmark they came from.

Every QA reader (`focuskit.data.qa.yollava`, `.thisismy`, `.myvlm`, `.jsonl`) returns a `QASet`; the answer
evaluation (`focuskit.eval.answers`) consumes it and never branches on the source. Three kinds of item:

* ``choice``: multiple choice; `options` maps letters to option texts, `correct` is the right letter.
* ``open``: open-ended; `answer` is the reference answer an LLM judge compares the prediction with.
* ``caption``: captioning; no reference needed (personalization recall and CLIPScore score it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from focuskit.core.errors import DatasetError
from focuskit.core.media import media_kind
from focuskit.data.sequences import DataReport

QAKind = Literal["choice", "open", "caption"]
KINDS: tuple[str, ...] = ("choice", "open", "caption")
LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class QAItem:
    """One question (or captioning request) about one image or video."""

    id: str
    """Unique within its set and stable across runs (resuming skips ids already answered)."""
    kind: QAKind
    media: Path
    """The image or video file the question is about."""
    concepts: tuple[str, ...]
    """Ground truth: the personal concepts the question is about, present in `media`, by display name."""
    question: str
    """The question with the concept's name filled in, options not included (`prompt_question` adds them)."""
    options: dict[str, str] = field(default_factory=dict)
    """Multiple choice: letter -> option text, in letter order."""
    correct: str | None = None
    """Multiple choice: the right letter."""
    answer: str | None = None
    """Open-ended: the reference answer."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def video(self) -> bool:
        return media_kind(self.media) == "video"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "media": str(self.media), "concepts": list(self.concepts),
            "question": self.question,
        }  # fmt: skip
        if self.options:
            out["options"], out["correct"] = dict(self.options), self.correct
        if self.answer is not None:
            out["answer"] = self.answer
        return out


@dataclass(frozen=True)
class QASet:
    name: str
    source: Path
    items: tuple[QAItem, ...]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Display name -> other names of the concept (the file's raw key, a folder name, ...). Captioning recall
    accepts any of them; adding concepts to a memory matches dataset folders against them."""
    concepts_root: Path | None = None
    """Where the benchmark's concept folders (reference images) probably are, when the layout says so."""
    concepts_format: str | None = None
    """The `focuskit data formats` name of the concept folders at `concepts_root`."""
    concepts_split: str | None = None
    """The split of that format (e.g. 'single' or 'multi' for This-Is-My-Img)."""
    report: DataReport = field(default_factory=DataReport)

    def __len__(self) -> int:
        return len(self.items)

    def concepts(self) -> list[str]:
        """Every concept named by some item, in order of first appearance."""
        return list(dict.fromkeys(c for it in self.items for c in it.concepts))

    def names_of(self, concept: str) -> tuple[str, ...]:
        """The display name and its aliases."""
        return (concept, *self.aliases.get(concept, ()))


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; expected a {what} (JSON)") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def media_candidates(rel: str, bases: Iterable[Path]) -> list[Path]:
    """Where a path written in a QA file may point: as given if absolute, else under each base, first with the
    path as written, then with its leading './' and '../' removed, then also without its first folder (so
    './yollava-data/test/bo/0.png' is found under a folder that holds `test/` itself)."""
    p = Path(rel)
    if p.is_absolute():
        return [p]
    stripped = Path(re.sub(r"^(\.{1,2}/)+", "", rel.replace("\\", "/")))
    forms = [p, stripped]
    if len(stripped.parts) > 1:
        forms.append(Path(*stripped.parts[1:]))
    out: list[Path] = []
    for base in bases:
        for form in forms:
            cand = base / form
            if cand not in out:
                out.append(cand)
    return out


def resolve_media(rel: str, bases: Iterable[Path]) -> Path | None:
    for cand in media_candidates(rel, bases):
        if cand.is_file():
            return cand
    return None


def check_media_suffix(path: Path, where: str) -> None:
    if media_kind(path) is None:
        suffix = path.suffix.lower()
        raise DatasetError(f"{where}: {path.name} is neither an image nor a video (suffix {suffix or 'none'})")


def parse_options(raw: Any, where: str) -> dict[str, str]:
    """`{"A": "Brown", "B": "Grey"}` (or a list, lettered in order) -> letter -> text, validated."""
    if isinstance(raw, list):
        raw = {LETTERS[i]: v for i, v in enumerate(raw[: len(LETTERS)])}
    if not isinstance(raw, dict):
        raise DatasetError(f'{where}: "options" must be an object like {{"A": "...", "B": "..."}}, got {raw!r}')
    out: dict[str, str] = {}
    for key in sorted(raw, key=str):
        letter = str(key).strip().upper()
        if len(letter) != 1 or letter not in LETTERS:
            raise DatasetError(f"{where}: option keys must be single letters A-H, got {key!r}")
        text = raw[key]
        if not isinstance(text, (str, int, float)) or not str(text).strip():
            raise DatasetError(f"{where}: option {letter} must be non-empty text, got {text!r}")
        out[letter] = str(text).strip()
    if len(out) < 2:
        raise DatasetError(f"{where}: a multiple-choice question needs at least 2 options, got {len(out)}")
    return out


def check_correct(correct: Any, options: dict[str, str], where: str) -> str:
    letter = str(correct).strip().upper() if isinstance(correct, str) else None
    if letter not in options:
        raise DatasetError(f"{where}: correct answer must be one of {', '.join(options)}, got {correct!r}")
    return letter


def fill_name(text: str, name: str, placeholders: tuple[str, ...] = ("<sks>",)) -> str:
    for ph in placeholders:
        text = text.replace(ph, name)
    return text


def concept_key(name: str) -> str:
    """Loose identity of a concept name: case, apostrophes and punctuation ignored ("Alex's hat" == "alexs hat")."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower().replace("'", "").replace("\u2019", "")).split())


def no_items_error(path: Path, report: DataReport) -> DatasetError:
    why = report.lines()[0] if report else "the file lists no questions"
    return DatasetError(f"{path}: no usable question ({why})")


def unique_ids(items: list[QAItem], where: Path) -> None:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise DatasetError(f"{where}: item id {it.id!r} appears twice; ids must be unique (resuming needs them)")
        seen.add(it.id)
