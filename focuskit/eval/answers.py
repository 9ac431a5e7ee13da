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

This module is the run itself (prompts, modes, answering, scoring); the detection cache (`answers_detection`),
the results file (`answers_results`) and the summary (`answers_summary`) have their own modules, their names
re-exported here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from focuskit.backends.base import GenerationOptions, VLMBackend
from focuskit.core.detections import Detections
from focuskit.core.errors import ConfigError
from focuskit.core.image import load_image
from focuskit.data.qa import QAItem, QASet
from focuskit.eval.answers_detection import CachedDetector, NoDetector, detector_signature
from focuskit.eval.answers_results import ResultsFile, current_records, key_of_record, record_key
from focuskit.eval.answers_scoring import CLIPScorer, judge_prompt, mentions, parse_choice, parse_verdict
from focuskit.eval.answers_summary import METRIC_NAMES, plot_summary, summarize, summary_rows
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
    done = {key_of_record(r) for r in results.records}
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


__all__ = [
    "MC_INSTRUCTION", "METRIC_NAMES", "MODES", "ORACLE_INSTRUCTION", "ORACLE_LINE", "AnswerEvalConfig",
    "CachedDetector", "NoDetector", "ResultsFile", "RunStats", "current_records", "detector_signature",
    "evaluate_answers", "oracle_question", "parse_modes", "plot_summary", "prompt_question", "record_key",
    "summarize", "summary_rows",
]  # fmt: skip
