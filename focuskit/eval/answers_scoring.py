"""Scoring personalized answers: a strict multiple-choice parser, Wilson intervals, the Video-ChatGPT judge prompt
and a robust parser of its verdicts, personalization recall (is the concept named?) and CLIPScore.

All parsers are plain functions of text, never `eval`: a model's output is data.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from focuskit.core.errors import ModelError

# --- multiple choice --------------------------------------------------------------------------------------------
_ANY_LETTER = "ABCDEFGH"
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z0-9'\u2019])([A-H])(?![A-Za-z0-9'\u2019])")
_CUE_BEFORE = re.compile(
    r"(answer|option|choice|letter|pick|select|choose|correct one)\s*(is|would be|will be|:|-|=)?\s*[\(\[]?\s*$",
    re.IGNORECASE,
)
_PAIR_AFTER = re.compile(r"\s+(or|and|nor|vs\.?|versus)\s+[\(\[]?[A-H](?![A-Za-z])")
_PAIR_BEFORE = re.compile(r"(?<![A-Za-z])[A-H][\)\]]?\s*,?\s+(or|and|nor|vs\.?|versus)\s+[\(\[]?$")
_VERB_AFTER = re.compile(r"\s+(is|was|seems|would|should)\b")
_JSON_KEYS = ("answer", "choice", "option", "letter", "prediction", "pred", "final_answer")


def normalize_text(text: str) -> str:
    """Lowercase words separated by single spaces: punctuation, possessive 's and apostrophes dropped."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"'s\b", "", t).replace("'", "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", t).split())


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    chunk = text[start : end + 1]
    for parse in (json.loads, ast.literal_eval):  # literal_eval reads Python dict literals only, never code
        try:
            obj = parse(chunk)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(obj, dict):
            return {str(k).lower(): v for k, v in obj.items()}
    return None


def _explicit_letters(text: str) -> set[str]:
    """Letters written as choices: 'B', '(B)', 'B.', 'Answer: B', 'option B', 'A or B' (both), 'B is right'."""
    bare = re.sub(r"[\s\.\)\(\]\[:,;!*\"']+", "", text)
    if len(bare) == 1 and bare.upper() in _ANY_LETTER:
        return {bare.upper()}
    found: set[str] = set()
    for m in _LETTER_TOKEN.finditer(text):
        before, after = text[: m.start()], text[m.end() :]
        if (
            not after.strip()
            or after[:1] in ".):,;]*\n"
            or before.rstrip().endswith(("(", "["))
            or _CUE_BEFORE.search(before)
            or _PAIR_AFTER.match(after)
            or _PAIR_BEFORE.search(before)
            or _VERB_AFTER.match(after)
        ):
            found.add(m.group(1))
    return found


def _text_matches(text: str, options: Mapping[str, str]) -> set[str]:
    """Options whose text appears in the answer as whole words; an option found only inside a longer option's
    occurrence ('cat' inside 'cat toy') does not count."""
    hay = f" {normalize_text(text)} "
    spans: dict[str, list[tuple[int, int]]] = {}
    for letter, option in options.items():
        needle = normalize_text(option)
        if not needle:
            continue
        found, start = [], hay.find(f" {needle} ")
        while start >= 0:
            found.append((start + 1, start + 1 + len(needle)))
            start = hay.find(f" {needle} ", start + 1)
        if found:
            spans[letter] = found
    out = set()
    for letter, mine in spans.items():
        inside = all(
            any(o0 <= s0 and s1 <= o1 and (o1 - o0) > (s1 - s0) for other, os in spans.items() if other != letter
                for o0, o1 in os)
            for s0, s1 in mine
        )  # fmt: skip
        if not inside:
            out.add(letter)
    return out


def parse_choice(text: str, options: Mapping[str, str]) -> str | None:
    """The option letter an answer picks, or None when it picks none, several, or one that does not exist.

    An explicit letter wins over option text ("B. Solid color, no stripes" is B even though option A is
    "Stripes"); without a letter, exactly one option's text must appear. A JSON answer ({"answer": "B"}) is read
    by its value. Anything ambiguous ("A or B", "brown and grey") is None, which scores 0.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    obj = _json_object(text)
    if obj is not None:
        for key in _JSON_KEYS:
            if isinstance(obj.get(key), (str, int, float)):
                return parse_choice(str(obj[key]), options) if "{" not in str(obj[key]) else None
    clean = text.replace("**", "").replace("__", "").replace("`", "")
    letters = _explicit_letters(clean)
    if len(letters) > 1:
        return None
    if len(letters) == 1:
        (letter,) = letters
        return letter if letter in options else None
    matched = _text_matches(clean, options)
    return next(iter(matched)) if len(matched) == 1 else None


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


# --- the judge (open-ended answers) -----------------------------------------------------------------------------
JUDGE_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine if "
    "they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the "
    "meaningful match between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases as "
    "valid matches.\n- Evaluate the correctness of the prediction compared to the answer."
)
JUDGE_USER = (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\nCorrect Answer: "
    "{answer}\nPredicted Answer: {prediction}\n\nProvide your evaluation only as a yes/no and score where the score "
    "is an integer value between 0 and 5, with 5 indicating the highest meaningful match. Please generate the "
    "response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a "
    "string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR "
    "EXPLANATION. Only provide the Python dictionary string. For example, your response should look like this: "
    "{{'pred': 'yes', 'score': 4.8}}."
)
"""Video-ChatGPT's autograding prompt (mbzuai-oryx/Video-ChatGPT, quantitative_evaluation/
evaluate_activitynet_qa.py), kept word for word so scores stay comparable with papers that use it."""


def judge_prompt(question: str, answer: str, prediction: str) -> str:
    """The system and user messages of the autograding prompt as one prompt (backends take one text)."""
    return JUDGE_SYSTEM + "\n\n" + JUDGE_USER.format(question=question, answer=answer, prediction=prediction)


@dataclass(frozen=True)
class Verdict:
    correct: bool | None
    """The judge's yes/no; None when its output says neither (or both)."""
    score: float | None
    """0-5; None when no score in range could be read."""

    @property
    def parsed(self) -> bool:
        return self.correct is not None


_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_NUM = r"(\d+(?:\.\d+)?|zero|one|two|three|four|five)"


def _number(token: str) -> float:
    return float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)


def _score_in_range(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        m = re.search(_NUM, value.lower())
        if m is None:
            return None
        v = _number(m.group(1))
    else:
        return None
    return v if 0.0 <= v <= 5.0 else None


def _yes_no(value: str) -> bool | None:
    words = set(re.findall(r"\b(yes|no|correct|incorrect)\b", value.lower()))
    yes, no = bool(words & {"yes", "correct"}), bool(words & {"no", "incorrect"})
    return None if yes == no else yes


def parse_verdict(text: str) -> Verdict:
    """Read a judge's output: a dict string ("{'pred': 'yes', 'score': 4}"), JSON, or prose ("Yes. Score: four")."""
    if not isinstance(text, str) or not text.strip():
        return Verdict(None, None)
    obj = _json_object(text)
    if obj is not None:
        pred = obj.get("pred", obj.get("prediction", obj.get("answer", obj.get("correct"))))
        correct = pred if isinstance(pred, bool) else _yes_no(pred) if isinstance(pred, str) else None
        score = _score_in_range(obj.get("score", obj.get("rating")))
        if correct is not None or score is not None:
            return Verdict(correct, score)
    low = text.lower()
    m = re.search(r"\bpred(?:iction)?\b\W*(yes|no)\b", low)
    correct = (m.group(1) == "yes") if m else _yes_no(re.sub(r"\bscore\b.*", "", low, flags=re.DOTALL) or low)
    score = None
    for pattern in (rf"\bscore\b\D{{0,12}}?{_NUM}", rf"{_NUM}\s*(?:/|out of)\s*5\b"):
        sm = re.search(pattern, low)
        if sm is not None:
            score = _score_in_range(sm.group(1))
            break
    else:
        numbers = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", low)
        if len(numbers) == 1:
            score = _score_in_range(numbers[0])
    return Verdict(correct, score)


# --- captioning -------------------------------------------------------------------------------------------------
def mentions(text: str, names: Iterable[str]) -> bool:
    """True when the text names the concept (any of `names`), ignoring case, punctuation and possessives."""
    hay = f" {normalize_text(text)} "
    return any(f" {n} " in hay for n in (normalize_text(x) for x in names) if n)


CLIPSCORE_WEIGHT = 2.5
"""CLIPScore = 2.5 * max(cos(image, text), 0) (Hessel et al., 2021)."""


class CLIPScorer:
    """CLIPScore with a transformers CLIP checkpoint (a local directory or a hub id)."""

    def __init__(self, model: Any, processor: Any, name: str) -> None:
        self.model, self.processor, self.name = model, processor, name

    @classmethod
    def load(cls, path: str | Path) -> CLIPScorer:
        from transformers import CLIPModel, CLIPProcessor

        p = Path(path)
        local = p.exists()
        if local and not (p / "config.json").is_file():
            raise ModelError(f"CLIP checkpoint {p} has no config.json")
        try:
            model = CLIPModel.from_pretrained(str(path), local_files_only=local)
            processor = CLIPProcessor.from_pretrained(str(path), local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load CLIP from {path}: {exc}") from None
        return cls(model.eval(), processor, str(path))

    def score(self, image: Image.Image, text: str) -> float:
        import torch

        max_len = getattr(self.processor.tokenizer, "model_max_length", 77)
        max_len = 77 if not isinstance(max_len, int) or max_len > 10_000 else max_len
        inputs = self.processor(
            text=[text], images=[image.convert("RGB")], return_tensors="pt", padding=True, truncation=True,
            max_length=max_len,
        )  # fmt: skip
        with torch.inference_mode():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return CLIPSCORE_WEIGHT * max(float((img * txt).sum()), 0.0)
