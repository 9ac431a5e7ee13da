"""Answer scoring: the strict multiple-choice parser, Wilson intervals, judge verdicts, recall and CLIPScore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from focuskit.eval.answers_scoring import (
    CLIPScorer,
    judge_prompt,
    mentions,
    parse_choice,
    parse_verdict,
    wilson_interval,
)

FUR = {"A": "Brown", "B": "Grey"}
PETS = {"A": "Cat", "B": "Dog"}
HAND = {"A": "Holding a book", "B": "Touching a statue's foot"}
NESTED = {"A": "Cat", "B": "Cat toy"}
PATTERN = {"A": "Stripes", "B": "Solid color"}


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("A", FUR, "A"),
        ("b", FUR, "B"),
        ("B.", FUR, "B"),
        ("(B)", FUR, "B"),
        ("b)", FUR, "B"),
        ("Answer: A", FUR, "A"),
        ("The answer is B.", FUR, "B"),
        ("**A**. Brown", FUR, "A"),
        ("A. Brown", FUR, "A"),
        ("A: Brown", FUR, "A"),
        ("Option B: Grey", FUR, "B"),
        ("The correct option is (A) Brown.", FUR, "A"),
        ("B is correct.", FUR, "B"),
        ("Brown", FUR, "A"),
        ("The fur of bo is brown.", FUR, "A"),
        ("A dog.", PETS, "B"),  # the article is not a letter: the text names the dog
        ("It looks like a cat to me.", PETS, "A"),
        ("Touching a statue\u2019s foot.", HAND, "B"),  # curly apostrophe, final period
        ("touching a statues foot", HAND, None),  # 'statues' is not "statue's": no option named
        ("Cat toy", NESTED, "B"),  # 'cat' inside 'cat toy' is not a second answer
        ("A cat.", NESTED, "A"),
        ("B. Solid color. There are no stripes on its head.", PATTERN, "B"),  # the letter wins over other words
        ('{"answer": "B"}', FUR, "B"),
        ('```json\n{"answer": "Grey"}\n```', FUR, "B"),
        ("{'choice': 'A'}", FUR, "A"),
        ("A or B", FUR, None),
        ("Both A and B could be right.", FUR, None),
        ("Neither A nor B.", FUR, None),
        ("A, B", FUR, None),
        ("Brown and grey.", FUR, None),
        ("I'm sorry, I can't tell from this image.", FUR, None),
        ("", FUR, None),
        ("C", FUR, None),  # a letter that is not an option
        ("The answer is C.", FUR, None),
    ],
)
def test_parse_choice(text: str, options: dict[str, str], expected: str | None) -> None:
    assert parse_choice(text, options) == expected


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 0, 0.0, 1.0),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (0, 10, 0.0, 0.2775),
        (160, 170, 0.8951, 0.9677),
    ],
)
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


@pytest.mark.parametrize(
    ("text", "correct", "score"),
    [
        ("{'pred': 'yes', 'score': 4}", True, 4.0),
        ("{'pred': 'no', 'score': 1}", False, 1.0),
        ('{"pred": "yes", "score": 4.8}', True, 4.8),
        ("{'pred': 'yes', 'score': '5'}", True, 5.0),
        ("Sure! Here is my evaluation: {'pred': 'no', 'score': 0}", False, 0.0),
        ("Yes. Score: four", True, 4.0),
        ("No, the score is two.", False, 2.0),
        ("pred: yes\nscore: 3", True, 3.0),
        ("I would rate it 3 out of 5. yes", True, 3.0),
        ("yes 5", True, 5.0),
        ("The prediction is incorrect. 0/5", False, 0.0),
        ("{'pred': 'yes', 'score': 9}", True, None),  # out of range
        ("maybe", None, None),
        ("yes and no", None, None),
        ("", None, None),
    ],
)
def test_parse_verdict(text: str, correct: bool | None, score: float | None) -> None:
    v = parse_verdict(text)
    assert v.correct is correct and v.score == score


def test_judge_prompt_is_video_chatgpts() -> None:
    p = judge_prompt("What is Bo doing?", "Sleeping", "Bo is asleep on the sofa")
    assert p.startswith("You are an intelligent chatbot designed for evaluating the correctness")
    assert "Question: What is Bo doing?\nCorrect Answer: Sleeping\nPredicted Answer: Bo is asleep on the sofa" in p
    assert "{'pred': 'yes', 'score': 4.8}" in p


@pytest.mark.parametrize(
    ("caption", "names", "expected"),
    [
        ("Bo's fur shines in the sun.", ["bo"], True),
        ("A dog named BO, sleeping.", ["bo"], True),
        ("A bowl of food.", ["bo"], False),  # 'bo' inside 'bowl' does not count
        ("Marie Cat sits on the sofa.", ["marie-cat"], True),
        ("Alex\u2019s everyday bag on a chair", ["Alex's everyday bag"], True),
        ("Alexs everyday bag on a chair", ["Alex's everyday bag", "Alexs everyday bag"], True),
        ("A grey cat on the sofa.", ["mam", "Mam the cat"], False),
    ],
)
def test_mentions(caption: str, names: list[str], expected: bool) -> None:
    assert mentions(caption, names) is expected


def _tiny_clip(path: Path) -> Path:
    """A random tiny CLIP with a character-level BPE tokenizer, saved like a hub checkpoint (no network)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,'!?-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=32)
    cfg = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(path)
    return path


def test_clipscore_on_a_tiny_random_clip(tmp_path: Path) -> None:
    scorer = CLIPScorer.load(_tiny_clip(tmp_path / "clip"))
    img = Image.new("RGB", (50, 40), (200, 30, 30))
    s = scorer.score(img, "bo is sleeping on a red sofa. " * 20)  # longer than the text model: truncated
    assert 0.0 <= s <= 2.5
    assert scorer.score(img, "bo is sleeping on a red sofa. " * 20) == s  # deterministic
