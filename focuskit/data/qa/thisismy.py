"""This-Is-My-Img VQA (PeKit, arXiv 2502.02452) and This-Is-My video QA.

Image VQA: the files themselves are distributed on Google Drive, not in a repository, so the layout below is the
one PeKit's own reader expects (github.com/vdorovatas/personalization_toolkit, `loader.py`, class
`This_is_my_VQA`, and the README's folder tree), not an inspection of the released files:

    This-is-My-Img/Single-concept/this-is-my-visual-qa-ambiguity.json        single-concept VQA
    This-is-My-Img/Multi-concept/this-is-my-visual-qa-multi-concept.json     multi-concept VQA
    This-is-My-Img/Multi-concept/VQA/*.json                                  one VQA file per concept pair

Each file nests concept -> image path -> entry like Yo'LLaVA's (see `focuskit.data.qa.nested`); image paths are
relative to the JSON's folder. Entries are multiple choice (`options` + `correct_answer`) or open-ended
(`answer`, or `correct_answer` without options). Concept keys are folder names without the category suffix and
without apostrophes ("Alexs everyday bag"); PeKit shows them with apostrophes ("Alex's everyday bag"), which is
the display name here (the raw key stays an alias). Multi-concept keys join two concepts with "_"
("Casey_Caseys boosted board"), as PeKit's `vqa.py` splits them.

Video QA: PeKit has not released its video QA files (its README lists "Video-QA evaluation" as still to come);
This-Is-My itself (github.com/danielchyeh/this-is-my) ships segments (`eval_segment/<segment id>.mp4`) and
`this-is-my-dataset/segments.csv` (segment_id -> instance_name), but no questions. Two layouts are read: the
nested JSON above with video paths, and Video-ChatGPT's QA list (github.com/mbzuai-oryx/Video-ChatGPT,
`quantitative_evaluation/`: `[{"video_name": ..., "Q": ..., "A": ...}]`), whose `video_name` is a segment id
and whose concept comes from an optional `"concept"` field or from `segments.csv`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from focuskit.core.errors import DatasetError
from focuskit.data.qa.nested import read_nested_vqa
from focuskit.data.qa.types import (
    QAItem,
    QASet,
    check_correct,
    check_media_suffix,
    concept_key,
    fill_name,
    load_json,
    no_items_error,
    parse_options,
    resolve_media,
    unique_ids,
)
from focuskit.data.sequences import DataReport

DISPLAY_NAMES = {
    "Alexs everyday bag": "Alex's everyday bag",
    "Alexs hat": "Alex's hat",
    "Blippis shoes": "Blippi's shoes",
    "Caseys boosted board": "Casey's boosted board",
    "Caseys friend marlan": "Casey's friend Marlan",
    "Caseys son": "Casey's son",
    "Gabs puppy lili": "Gab's puppy Lili",
    "Nikkis camper bag": "Nikki's camper bag",
    "Nikkis car": "Nikki's car",
    "Reynards keyboard": "Reynard's keyboard",
    "Reynards work chair": "Reynard's work chair",
    "Sherrys road bike": "Sherry's road bike",
    "Zaks dog coffee": "Zak's dog Coffee",
    "Zaks dog kona": "Zak's dog Kona",
}
"""PeKit's `LABEL_MAP_DEFAULT` (loader.py): file key -> the name used in prompts."""
_BY_KEY = {concept_key(k): v for k, v in DISPLAY_NAMES.items()}

SINGLE_FILES = ("this-is-my-visual-qa-ambiguity.json", "this-is-my-visual-qa.json")
MULTI_FILES = ("this-is-my-visual-qa-multi-concept.json",)


def display_name(key: str) -> str:
    return DISPLAY_NAMES.get(key) or _BY_KEY.get(concept_key(key)) or key


def _names_single(key: str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    name = display_name(key)
    return (name,), ({name: (key,)} if name != key else {})


def _names_multi(key: str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    parts = [p.strip() for p in key.split("_") if p.strip()]
    if not parts:
        raise DatasetError(f"multi-concept key {key!r} names no concept")
    names = tuple(display_name(p) for p in parts)
    return names, {n: (p,) for n, p in zip(names, parts, strict=True) if n != p}


def _vqa_files(path: Path, multi: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"This-Is-My-Img VQA file or folder not found: {path}")
    sub = "Multi-concept" if multi else "Single-concept"
    bases = [path / sub, path] if (path / sub).is_dir() else [path]
    for base in bases:
        for name in MULTI_FILES if multi else SINGLE_FILES:
            if (base / name).is_file():
                return [base / name]
        if multi and (base / "VQA").is_dir():
            files = sorted((base / "VQA").glob("*.json"))
            if files:
                return files
        files = sorted(base.glob("*.json"))
        if files:
            return files
    raise DatasetError(
        f"{path}: no VQA JSON found (expected {sub}/{(MULTI_FILES if multi else SINGLE_FILES)[0]}"
        f"{' or Multi-concept/VQA/*.json' if multi else ''})"
    )


def _concepts_root(folder: Path) -> Path | None:
    for cand in (folder, folder.parent):
        if (cand / "train").is_dir() or (cand / "Reference Images").is_dir():
            return cand
    return None


def read_thisismy_vqa(path: str | Path, *, multi: bool = False, media_root: str | Path | None = None) -> QASet:
    """Single-concept (`multi=False`) or multi-concept VQA: a JSON file, or a folder holding the VQA JSON(s)."""
    files = _vqa_files(Path(path), multi)
    root = Path(media_root) if media_root is not None else None
    report = DataReport()
    items: list[QAItem] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for f in files:
        bases = [b for b in (root, f.parent, f.parent.parent) if b is not None]
        prefix = f"{f.stem}:" if len(files) > 1 else ""
        got, al = read_nested_vqa(
            f, bases=bases, names=_names_multi if multi else _names_single, report=report, id_prefix=prefix
        )
        items.extend(got)
        for k, v in al.items():
            aliases[k] = tuple(dict.fromkeys((*aliases.get(k, ()), *v)))
    if not items:
        raise no_items_error(files[0], report)
    unique_ids(items, files[0])
    return QASet(
        name=f"this-is-my-{'multi' if multi else 'single'}-vqa", source=files[0], items=tuple(items),
        aliases=aliases, concepts_root=_concepts_root(files[0].parent), concepts_format="thisismy",
        concepts_split="multi" if multi else "single", report=report,
    )  # fmt: skip


# --- video QA ---------------------------------------------------------------------------------------------------
def read_segment_names(root: Path) -> dict[str, str]:
    """segment id -> instance name from This-Is-My's `segments.csv` and `this-is-my_eval-captions.csv`."""
    out: dict[str, str] = {}
    for name, id_col, name_col in (
        ("segments.csv", "segment_id", "instance_name"),
        ("this-is-my_eval-captions.csv", "segs", "item"),
    ):
        for folder in (root / "this-is-my-dataset", root):
            f = folder / name
            if not f.is_file():
                continue
            with f.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    seg, inst = (row.get(id_col) or "").strip(), (row.get(name_col) or "").strip()
                    if seg and inst:
                        out.setdefault(seg, inst)
            break
    return out


def _video(name: str, bases: list[Path]) -> Path | None:
    for base in bases:
        for sub in (base, base / "eval_segment", base / "train_segment"):
            found = resolve_media(name, [sub])
            if found is None and not Path(name).suffix:
                found = resolve_media(f"{name}.mp4", [sub])
            if found is not None:
                return found
    return None


def _text(entry: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = entry.get(k)
        if isinstance(v, (str, int, float)) and str(v).strip():
            return str(v).strip()
    return None


def read_thisismy_video_qa(path: str | Path, *, media_root: str | Path | None = None) -> QASet:
    """Video QA: the nested VQA JSON with video paths, or a Video-ChatGPT-style list (see the module doc)."""
    path = Path(path)
    root = Path(media_root) if media_root is not None else None
    data = load_json(path, "video QA file")
    if isinstance(data, dict):
        qa = read_thisismy_vqa(path, media_root=root)
        return QASet(name="this-is-my-video-qa", source=qa.source, items=qa.items, aliases=qa.aliases, report=qa.report)
    if not isinstance(data, list) or not data:
        raise DatasetError(f'{path}: expected a list [{{"video_name": ..., "Q": ..., "A": ...}}] or a nested object')
    bases = [b for b in (root, path.parent, path.parent.parent) if b is not None]
    segments: dict[str, str] = {}
    for b in bases:
        segments.update({k: v for k, v in read_segment_names(b).items() if k not in segments})
    report = DataReport()
    items: list[QAItem] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(data):
        where = f"{path}, entry {i}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
        video_name = _text(entry, ("video_name", "video", "segment_id"))
        question = _text(entry, ("Q", "question"))
        if video_name is None or question is None:
            raise DatasetError(f'{where}: needs "video_name" and "Q" (or "video" and "question")')
        raw = entry.get("concepts", entry.get("concept", entry.get("instance_name")))
        raw_names = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        if not raw_names and Path(video_name).stem in segments:
            raw_names = [segments[Path(video_name).stem]]
        if not raw_names or not all(isinstance(n, str) and n.strip() for n in raw_names):
            raise DatasetError(
                f'{where}: no concept for video {video_name!r}: give "concept" or put This-Is-My\'s '
                "this-is-my-dataset/segments.csv under --media-root"
            )
        names = tuple(display_name(n.strip()) for n in raw_names)
        for n, r in zip(names, raw_names, strict=True):
            if n != r.strip():
                aliases[n] = tuple(dict.fromkeys((*aliases.get(n, ()), r.strip())))
        media = _video(video_name, bases)
        if media is None:
            report.add("missing_media", f"{video_name} (under {', '.join(str(b) for b in bases)})")
            continue
        check_media_suffix(media, where)
        question = fill_name(question, names[0])
        item_id = f"{Path(video_name).stem}#{i}"
        if "options" in entry:
            options = parse_options(entry["options"], where)
            correct = check_correct(entry.get("correct_answer", entry.get("A")), options, where)
            items.append(QAItem(item_id, "choice", media, names, question, options=options, correct=correct))
            continue
        answer = _text(entry, ("A", "answer"))
        if answer is None:
            raise DatasetError(f'{where}: needs a reference answer "A" (or "answer")')
        items.append(QAItem(item_id, "open", media, names, question, answer=fill_name(answer, names[0])))
    if not items:
        raise no_items_error(path, report)
    unique_ids(items, path)
    return QASet(name="this-is-my-video-qa", source=path, items=tuple(items), aliases=aliases, report=report)
