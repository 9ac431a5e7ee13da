"""Readers of personalized QA / captioning benchmarks into one `QASet` (see `types`), by format name.

| format | what | reader |
|---|---|---|
| `yollava-vqa` | Yo'LLaVA `yollava-visual-qa.json` (multiple choice) | `yollava.read_yollava_vqa` |
| `thisismy-vqa` | This-Is-My-Img single-concept VQA (choice + open) | `thisismy.read_thisismy_vqa` |
| `thisismy-multi-vqa` | This-Is-My-Img multi-concept VQA | `thisismy.read_thisismy_vqa(multi=True)` |
| `thisismy-video-qa` | This-Is-My video QA (nested JSON or Video-ChatGPT list) | `thisismy.read_thisismy_video_qa` |
| `myvlm-captions` | MyVLM concept folders, non-reference photos to caption | `myvlm.read_myvlm_captions` |
| `qa-jsonl` | focuskit's own QA JSONL | `jsonl.read_qa_jsonl` |

Layouts and their sources: docs/answers.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from focuskit.core.errors import ConfigError
from focuskit.data.qa.types import KINDS, QAItem, QAKind, QASet, concept_key

__all__ = ["KINDS", "QA_FORMATS", "QAItem", "QAKind", "QASet", "concept_key", "read_qaset"]


def _yollava(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.yollava import read_yollava_vqa

    return read_yollava_vqa(path, media_root=media_root)


def _thisismy(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.thisismy import read_thisismy_vqa

    return read_thisismy_vqa(path, media_root=media_root)


def _thisismy_multi(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.thisismy import read_thisismy_vqa

    return read_thisismy_vqa(path, multi=True, media_root=media_root)


def _thisismy_video(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.thisismy import read_thisismy_video_qa

    return read_thisismy_video_qa(path, media_root=media_root)


def _myvlm(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.myvlm import read_myvlm_captions

    return read_myvlm_captions(media_root or path)


def _jsonl(path: Path, media_root: Path | None) -> QASet:
    from focuskit.data.qa.jsonl import read_qa_jsonl

    return read_qa_jsonl(path, media_root=media_root)


QA_FORMATS: dict[str, tuple[Callable[[Path, Path | None], QASet], str]] = {
    "yollava-vqa": (_yollava, "Yo'LLaVA yollava-visual-qa.json, or the folder holding it"),
    "thisismy-vqa": (_thisismy, "This-Is-My-Img single-concept VQA JSON, or This-is-My-Img/"),
    "thisismy-multi-vqa": (_thisismy_multi, "This-Is-My-Img multi-concept VQA JSON, Multi-concept/VQA/, or root"),
    "thisismy-video-qa": (_thisismy_video, "video QA JSON: nested like the image VQA, or a Video-ChatGPT list"),
    "myvlm-captions": (_myvlm, "MyVLM root (<root>/[data/]<concept>/*.jpg)"),
    "qa-jsonl": (_jsonl, "focuskit QA JSONL (one question per line)"),
}


def read_qaset(fmt: str, path: str | Path, *, media_root: str | Path | None = None) -> QASet:
    """Read `path` in format `fmt` (a `QA_FORMATS` name); media paths are also tried under `media_root`."""
    if fmt not in QA_FORMATS:
        raise ConfigError(f"unknown QA format {fmt!r}; available: {', '.join(QA_FORMATS)}")
    return QA_FORMATS[fmt][0](Path(path), Path(media_root) if media_root is not None else None)
