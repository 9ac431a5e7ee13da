"""Personalized answers, evaluated: one `QASet`, one backend, three ways side by side.

* ``plain``: the VLM alone, the question as asked (the un-personalized baseline every gain must be read against:
  on Yo'LLaVA's VQA a plain LLaVA-1.5-13B already scores 0.941).
* ``pekit``: PeKit through the same code path as `focuskit ask` (`personalize.answer.ask` / `video.ask_video`):
  the memory's concepts are detected, drawn, named and given their context.
* ``oracle``: the ground-truth concepts are stated present ('This image shows "bo".' + context), with the plain
  image: an upper bound for the answer stage, since no box is known in these benchmarks.

PeKit's detection runs once per image (or video frame): `CachedDetector` keeps it in memory and, given a
`KeyValueCache`, on disk, so every question on an image and every rerun reuse it; plain and oracle need none.
Results are appended one JSON line per (item, mode) to a `ResultsFile`, so an interrupted run resumes where it
stopped; multiple choice is scored by `parse_choice`, open-ended answers by an LLM judge with Video-ChatGPT's
autograding prompt, captions by personalization recall (the concept named) and optionally CLIPScore.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.backends.cache import KeyValueCache, image_digest
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError, DatasetError
from focuskit.core.image import ImageInput, load_image
from focuskit.core.io import atomic_write_bytes, atomic_write_text
from focuskit.data.qa import QAItem, QASet
from focuskit.eval.answers_scoring import (
    CLIPScorer,
    judge_prompt,
    mentions,
    parse_choice,
    parse_verdict,
    wilson_interval,
)
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.detector import Detector
from focuskit.personalize.prompting import PromptTemplate
from focuskit.personalize.video import SamplingConfig

MODES: tuple[str, ...] = ("plain", "pekit", "oracle")
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
"""LLaVA's multiple-choice instruction (its MMBench / ScienceQA evaluation prompts)."""
ORACLE_LINE = 'This {medium} shows "{name}".'
ORACLE_INSTRUCTION = "Refer to each of these entities by its given name."


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise ConfigError(f"modes must be a comma-separated subset of {', '.join(MODES)}, got {text!r}")
    return modes


def prompt_question(item: QAItem) -> str:
    """The question as the VLM reads it: with the lettered options and the answer-format instruction."""
    if item.kind != "choice":
        return item.question
    options = "\n".join(f"{letter}. {text}" for letter, text in item.options.items())
    return f"{item.question}\n{options}\n{MC_INSTRUCTION}"


def oracle_question(
    item: QAItem, question: str, memory: ConceptMemory | None, template: PromptTemplate, medium: str
) -> str:
    lines = [ORACLE_LINE.format(medium=medium, name=name) for name in item.concepts]
    for name in item.concepts:
        context = memory.context(name) if memory is not None and name in memory else ""
        if context and template.context_line:
            lines.append(template.context_line.format(name=name, context=context))
    lines.append(ORACLE_INSTRUCTION)
    lines.append(template.question_line.format(question=question))
    return "\n".join(lines)


class NoDetector:
    """Finds nothing: `ask` then sends the question unchanged with the plain image (the plain and oracle modes)."""

    def __init__(self, memory: ConceptMemory | None) -> None:
        self.memory = memory  # type: ignore[assignment]

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        return Detections.empty()

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        return {}


class CachedDetector:
    """A `Detector` whose `detect` runs once per distinct image (by pixel digest) for a given `signature`."""

    def __init__(self, detector: Detector, *, signature: str, store: KeyValueCache | None = None) -> None:
        self.detector = detector
        self.memory = detector.memory
        self.signature = signature
        self.store = store
        self._seen: dict[str, Detections] = {}
        self.runs = 0
        self.reused = 0

    def detect(self, image: ImageInput, concepts: Sequence[str] | None = None) -> Detections:
        img = load_image(image)
        key = hashlib.sha256(
            json.dumps([self.signature, image_digest(img), sorted(concepts) if concepts else None]).encode()
        ).hexdigest()
        if key in self._seen:
            self.reused += 1
            return self._seen[key]
        stored = self.store.get(key) if self.store is not None else None
        if isinstance(stored, list):
            dets = _detections_from_json(stored)
            self.reused += 1
        else:
            dets = self.detector.detect(img, concepts)
            self.runs += 1
            if self.store is not None:
                self.store.put(key, dets.to_json())
        self._seen[key] = dets
        return dets

    def concept_scores(self, image: ImageInput, concepts: Sequence[str] | None = None) -> dict[str, float]:
        return self.detector.concept_scores(image, concepts)


def _detections_from_json(rows: list[dict[str, Any]]) -> Detections:
    import numpy as np

    if not rows:
        return Detections.empty()
    return Detections(
        np.asarray([r["box"] for r in rows], dtype=np.float64).reshape(-1, 4),
        np.asarray([r["score"] for r in rows], dtype=np.float64),
        [str(r["concept"]) for r in rows],
    )


def detector_signature(memory: ConceptMemory, detector: Detector) -> str:
    """What a cached detection depends on: the memory (path, contents generation, encoder) and the detector's
    settings. Any change to the memory bumps its generation, so stale detections are never reused."""
    config = getattr(detector, "config", None)
    return json.dumps(
        [str(Path(memory.directory).resolve()) if hasattr(memory, "directory") else id(memory),
         memory.generation(), memory.encoder_name, type(detector).__name__, repr(config)]
    )  # fmt: skip


# --- results file -------------------------------------------------------------------------------------------------
class ResultsFile:
    """One JSON object per line, appended and fsynced per record; a torn last line (a crash mid-write) is dropped
    when the file is opened again."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"results path {self.path} exists and is not a file")
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            good: list[str] = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(text.splitlines()):  # the torn tail of an interrupted run
                        continue
                    raise DatasetError(f"{self.path}:{n}: not valid JSON; not a results file of eval-answers") from None
                if not isinstance(obj, dict) or "id" not in obj or "mode" not in obj:
                    raise DatasetError(f"{self.path}:{n}: not a result record (needs id and mode)")
                self.records.append(obj)
                good.append(line)
            if len(good) != sum(1 for ln in text.splitlines() if ln.strip()):
                atomic_write_text(self.path, "".join(g + "\n" for g in good))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._fh.close()


def record_key(item_id: str, mode: str, kind: str, answerer: str, judge: str | None, clip: str | None) -> str:
    """Identity of a result: what it depends on. A rerun with another judge re-judges only the open items."""
    return json.dumps([item_id, mode, answerer, judge if kind == "open" else None, clip if kind == "caption" else None])


def _key_of(rec: dict[str, Any]) -> str:
    return record_key(rec["id"], rec["mode"], rec.get("kind", ""), rec.get("answerer", ""), rec.get("judge"),
                      rec.get("clip"))  # fmt: skip


# --- the run --------------------------------------------------------------------------------------------------------
@dataclass
class AnswerEvalConfig:
    modes: tuple[str, ...] = MODES
    limit: int | None = None
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    judge_generation: GenerationOptions = field(default_factory=lambda: GenerationOptions(max_new_tokens=64))
    template: PromptTemplate = field(default_factory=PromptTemplate)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    frames: int = 8
    """Frames of a video sent to a video-capable backend (others get at most 4)."""

    def __post_init__(self) -> None:
        parse_modes(",".join(self.modes))
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")


@dataclass
class RunStats:
    evaluated: int = 0
    skipped: int = 0
    """Results already in the file (resumed)."""


def _answer(
    item: QAItem, mode: str, backend: VLMBackend, memory: ConceptMemory | None, detector: Detector,
    config: AnswerEvalConfig,
) -> tuple[str, str, Detections | None, list[str]]:  # fmt: skip
    """(answer text, prompt, detections or None, names detected) through PeKit's own ask / ask_video."""
    from focuskit.personalize.answer import ask
    from focuskit.personalize.video import ask_video

    medium = "video" if item.video else "image"
    question = prompt_question(item)
    det: Detector = detector if mode == "pekit" else NoDetector(memory)
    if mode == "oracle":
        question = oracle_question(item, question, memory, config.template, medium)
    if item.video:
        va = ask_video(
            item.media, question, memory, backend, detector=det, sampling=config.sampling,  # type: ignore[arg-type]
            frames_to_backend=config.frames, template=config.template, options=config.generation,
        )  # fmt: skip
        return va.text, va.prompt, None, va.result.concepts()
    ans = ask(
        item.media, question, memory, backend, detector=det, template=config.template,  # type: ignore[arg-type]
        options=config.generation,
    )  # fmt: skip
    return ans.text, ans.prompt, ans.detections, list(dict.fromkeys(ans.detections.names))


def _first_frame(item: QAItem) -> Image.Image:
    if not item.video:
        return load_image(item.media)
    from focuskit.personalize.video import read_frames

    with contextlib.closing(read_frames(item.media)) as frames:
        return next(iter(frames)).image


def evaluate_answers(
    qaset: QASet,
    backend: VLMBackend,
    results: ResultsFile,
    *,
    memory: ConceptMemory | None = None,
    detector: Detector | None = None,
    judge: VLMBackend | None = None,
    clip: CLIPScorer | None = None,
    config: AnswerEvalConfig | None = None,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunStats:
    """Answer and score every item of `qaset` (the first `config.limit`) in each mode, appending to `results`."""
    from tqdm.auto import tqdm

    config = config or AnswerEvalConfig()
    items = list(qaset.items[: config.limit] if config.limit else qaset.items)
    if "pekit" in config.modes and (memory is None or detector is None):
        raise ConfigError("the pekit mode needs a concept memory and a detector")
    if judge is None and any(it.kind == "open" for it in items):
        raise ConfigError("open-ended questions need a judge backend")
    judge_name = judge.name if judge is not None else None
    clip_name = clip.name if clip is not None else None
    done = {_key_of(r) for r in results.records}
    stats = RunStats()
    bar = tqdm(total=len(items) * len(config.modes), desc="answers", unit="answer", disable=not progress)
    try:
        for item in items:
            for mode in config.modes:
                key = record_key(item.id, mode, item.kind, backend.name, judge_name, clip_name)
                bar.update(1)
                if key in done:
                    stats.skipped += 1
                    continue
                text, prompt, _, found = _answer(item, mode, backend, memory, detector or NoDetector(memory), config)
                rec: dict[str, Any] = {
                    "id": item.id, "mode": mode, "kind": item.kind, "media": str(item.media),
                    "concepts": list(item.concepts), "question": item.question, "prompt": prompt, "answer": text,
                    "answerer": backend.name,
                }  # fmt: skip
                if mode == "pekit":
                    rec["detected"] = found
                    rec["recognized"] = all(c in found for c in item.concepts)
                rec.update(_score(item, text, qaset, judge, clip, config))
                results.append(rec)
                done.add(key)
                stats.evaluated += 1
                if on_record is not None:
                    on_record(rec)
    finally:
        bar.close()
    return stats


def _score(
    item: QAItem, text: str, qaset: QASet, judge: VLMBackend | None, clip: CLIPScorer | None,
    config: AnswerEvalConfig,
) -> dict[str, Any]:  # fmt: skip
    if item.kind == "choice":
        choice = parse_choice(text, item.options)
        return {
            "options": item.options,
            "correct": item.correct,
            "choice": choice,
            "score": int(choice == item.correct),
        }
    if item.kind == "open":
        assert judge is not None  # checked before the run
        raw = judge.generate([], judge_prompt(item.question, item.answer or "", text), options=config.judge_generation)
        verdict = parse_verdict(raw)
        return {
            "reference": item.answer, "judge": judge.name, "judge_output": raw, "judge_correct": verdict.correct,
            "judge_score": verdict.score, "score": int(verdict.correct is True),
        }  # fmt: skip
    named = [c for c in item.concepts if mentions(text, qaset.names_of(c))]
    out: dict[str, Any] = {"named": named, "score": int(len(named) == len(item.concepts))}
    if clip is not None:
        out["clip"] = clip.name
        out["clipscore"] = round(clip.score(_first_frame(item), text), 4)
    return out


# --- summary ----------------------------------------------------------------------------------------------------
METRIC_NAMES = {"choice": "multiple-choice accuracy", "open": "open-ended accuracy (judge: yes)",
                "caption": "personalization recall"}  # fmt: skip


def current_records(
    records: Iterable[dict[str, Any]], item_ids: set[str], answerer: str, judge: str | None, clip: str | None
) -> list[dict[str, Any]]:
    """The records of this run's configuration (the file may also hold other judges' or models' results)."""
    out = {}
    for r in records:
        if r["id"] not in item_ids:
            continue
        if _key_of(r) == record_key(r["id"], r["mode"], r.get("kind", ""), answerer, judge, clip):
            out[(r["id"], r["mode"])] = r
    return list(out.values())


def summarize(records: list[dict[str, Any]], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode and kind: n, successes, the rate with its 95% Wilson interval, and kind-specific extras."""
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in records if r["mode"] == mode]
        by_kind: dict[str, Any] = {}
        for kind in ("choice", "open", "caption"):
            rs = [r for r in mine if r["kind"] == kind]
            if not rs:
                continue
            k = sum(int(r["score"]) for r in rs)
            lo, hi = wilson_interval(k, len(rs))
            entry: dict[str, Any] = {"n": len(rs), "successes": k, "rate": k / len(rs), "ci95": [lo, hi]}
            if kind == "choice":
                entry["unparsed"] = sum(1 for r in rs if r.get("choice") is None)
            if kind == "open":
                scores = [r["judge_score"] for r in rs if r.get("judge_score") is not None]
                entry["mean_score"] = sum(scores) / len(scores) if scores else None
                entry["unparsed"] = sum(1 for r in rs if r.get("judge_correct") is None)
                entry["judges"] = sorted({str(r.get("judge")) for r in rs})
            if kind == "caption":
                cs = [r["clipscore"] for r in rs if r.get("clipscore") is not None]
                entry["clipscore"] = sum(cs) / len(cs) if cs else None
            by_kind[kind] = entry
        if mode == "pekit" and mine:
            by_kind["recognized"] = sum(1 for r in mine if r.get("recognized")) / len(mine)
        summary[mode] = by_kind
    return summary


def summary_rows(summary: dict[str, Any], modes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(metric label, one cell per mode) for a table."""
    rows: list[tuple[str, list[str]]] = []
    for kind, label in METRIC_NAMES.items():
        if not any(kind in summary.get(m, {}) for m in modes):
            continue
        cells = []
        for m in modes:
            e = summary.get(m, {}).get(kind)
            cells.append("-" if e is None else f"{e['rate']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] n={e['n']}")
        rows.append((label, cells))
        if kind == "open":
            rows.append(("open-ended mean score (0-5)", [_fmt(summary.get(m, {}).get(kind, {}).get("mean_score"))
                                                         for m in modes]))  # fmt: skip
        if kind == "caption" and any(summary.get(m, {}).get(kind, {}).get("clipscore") is not None for m in modes):
            rows.append(("CLIPScore", [_fmt(summary.get(m, {}).get(kind, {}).get("clipscore")) for m in modes]))
        if kind in ("choice", "open"):
            rows.append((f"{kind}: unparsed", [str(summary.get(m, {}).get(kind, {}).get("unparsed", "-"))
                                               for m in modes]))  # fmt: skip
    if "pekit" in modes and "recognized" in summary.get("pekit", {}):
        rows.append(("pekit: concepts recognized", [_fmt(summary["pekit"]["recognized"]) if m == "pekit" else "-"
                                                     for m in modes]))  # fmt: skip
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def plot_summary(summary: dict[str, Any], modes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per mode, 95% Wilson intervals as error bars (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = [k for k in METRIC_NAMES if any(k in summary.get(m, {}) for m in modes)]
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(kinds) + 1), 3.6), dpi=110)
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(kinds))
    for j, mode in enumerate(modes):
        rates, errs = [], [[], []]
        for k in kinds:
            e = summary.get(mode, {}).get(k)
            r = e["rate"] if e else 0.0
            rates.append(r)
            errs[0].append(r - e["ci95"][0] if e else 0.0)
            errs[1].append(e["ci95"][1] - r if e else 0.0)
        bars = ax.bar(x + (j - (len(modes) - 1) / 2) * width, rates, width, yerr=errs, capsize=3, label=mode)
        for b, r in zip(bars, rates, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, 0.01, f"{r:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [METRIC_NAMES[k].split(" (")[0] for k in kinds], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% Wilson CI)")
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
