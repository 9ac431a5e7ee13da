"""QA readers on fixtures written in the benchmarks' own layouts (Yo'LLaVA, This-Is-My-Img, This-Is-My video,
MyVLM, focuskit JSONL), and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from focuskit.core.errors import ConfigError, DatasetError
from focuskit.data.qa import QA_FORMATS, read_qaset


def _img(path: Path, color: tuple[int, int, int] = (120, 80, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), color).save(path)
    return path


def _json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))
    return path


def write_yollava(repo: Path) -> Path:
    """The YoLLaVA repository: yollava-data/{train,test}/<concept>/N.png and yollava-data/yollava-visual-qa.json
    with image keys relative to the repository root, nested by concept (as in the released file)."""
    for c in ("bo", "shiba-gray"):
        _img(repo / "yollava-data" / "train" / c / "0.png")
        _img(repo / "yollava-data" / "test" / c / "0.png")
        _img(repo / "yollava-data" / "test" / c / "1.png")
    qa = {
        "bo": {
            "./yollava-data/test/bo/0.png": {
                "question": "What is the primary color of <sks>'s fur?", "options": {"A": "Brown", "B": "Grey"},
                "correct_answer": "A",
            },
        },
        "shiba-gray": {
            "./yollava-data/test/shiba-gray/1.png": {
                "question": "What animal does <sks> resemble?", "options": {"A": "Cat", "B": "Dog"},
                "correct_answer": "B",
            },
            "./yollava-data/test/shiba-gray/9.png": {  # the image is missing: skipped and counted
                "question": "What is <sks>?", "options": {"A": "Cat", "B": "Dog"}, "correct_answer": "B",
            },
        },
    }  # fmt: skip
    return _json(repo / "yollava-data" / "yollava-visual-qa.json", qa)


def test_yollava_vqa(tmp_path: Path) -> None:
    qa_file = write_yollava(tmp_path / "YoLLaVA")
    for path in (qa_file, qa_file.parent, tmp_path / "YoLLaVA"):
        qa = read_qaset("yollava-vqa", path)
        assert [it.id for it in qa.items] == [
            "bo|./yollava-data/test/bo/0.png",
            "shiba-gray|./yollava-data/test/shiba-gray/1.png",
        ]
    bo = qa.items[0]
    assert bo.kind == "choice" and bo.question == "What is the primary color of bo's fur?"
    assert bo.options == {"A": "Brown", "B": "Grey"} and bo.correct == "A" and bo.concepts == ("bo",)
    assert bo.media == tmp_path / "YoLLaVA" / "yollava-data" / "test" / "bo" / "0.png" and not bo.video
    assert qa.report.counts["missing_media"] == 1
    assert qa.concepts_root == tmp_path / "YoLLaVA" / "yollava-data" and qa.concepts_format == "yollava"


def test_yollava_readme_flat_layout_and_pekit_placement(tmp_path: Path) -> None:
    """The README's flat example (no concept level) beside a PeKit-style YoLLaVA/{train,test} folder."""
    root = tmp_path / "datasets" / "YoLLaVA"
    _img(root / "test" / "bo" / "0.png")
    (root / "train" / "bo").mkdir(parents=True)
    flat = {"./yollava-data/test/bo/0.png": {"question": "Is <sks> a dog?", "options": {"A": "Yes", "B": "No"},
                                             "correct_answer": "A"}}  # fmt: skip
    f = _json(tmp_path / "qa.json", flat)
    qa = read_qaset("yollava-vqa", f, media_root=root)
    (item,) = qa.items
    assert item.concepts == ("bo",) and item.media == root / "test" / "bo" / "0.png" and item.question == "Is bo a dog?"
    assert qa.concepts_root == root


def write_thisismy(root: Path) -> tuple[Path, Path]:
    """This-is-My-Img/{Single,Multi}-concept with train/ folders and the VQA JSONs PeKit's loader reads."""
    single = root / "Single-concept"
    _img(single / "train" / "Alexs hat-hat" / "0.png")
    _img(single / "test" / "Positive" / "Alexs hat-hat" / "3.png")
    _img(single / "test" / "Positive" / "Nikkis car-car" / "1.png")
    sq = {
        "Alexs hat": {
            "./test/Positive/Alexs hat-hat/3.png": {
                "question": "What color is <sks>?", "options": {"A": "Red", "B": "Blue"}, "correct_answer": "B",
            },
        },
        "Nikkis car": {
            "./test/Positive/Nikkis car-car/1.png": {
                "question": "Where is <sks> parked?", "answer": "In front of a house",
                "gpt_answer": "<sks> is parked in front of a house.",
            },
        },
    }  # fmt: skip
    multi = root / "Multi-concept"
    _img(multi / "train" / "Casey-man" / "0.png")
    _img(multi / "test" / "Casey_Caseys boosted board" / "0.png")
    mq = {
        "Casey_Caseys boosted board": {
            "./test/Casey_Caseys boosted board/0.png": {
                "question": "What is Casey doing with Casey's boosted board?",
                "options": {"A": "Riding it", "B": "Carrying it"}, "correct_answer": "A",
            },
        },
    }  # fmt: skip
    return (
        _json(single / "this-is-my-visual-qa-ambiguity.json", sq),
        _json(multi / "this-is-my-visual-qa-multi-concept.json", mq),
    )


def test_thisismy_single_and_multi(tmp_path: Path) -> None:
    single_file, multi_file = write_thisismy(tmp_path / "This-is-My-Img")
    for path in (single_file, tmp_path / "This-is-My-Img"):
        qa = read_qaset("thisismy-vqa", path)
        assert len(qa) == 2
    hat, car = qa.items
    assert hat.concepts == ("Alex's hat",) and hat.question == "What color is Alex's hat?" and hat.correct == "B"
    assert car.kind == "open" and car.answer == "In front of a house" and car.question == "Where is Nikki's car parked?"
    assert car.meta["gpt_answer"].startswith("<sks>")
    assert qa.aliases == {"Alex's hat": ("Alexs hat",), "Nikki's car": ("Nikkis car",)}
    assert (qa.concepts_root, qa.concepts_format, qa.concepts_split) == (single_file.parent, "thisismy", "single")

    for path in (multi_file, tmp_path / "This-is-My-Img"):
        multi = read_qaset("thisismy-multi-vqa", path)
        (item,) = multi.items
        assert item.concepts == ("Casey", "Casey's boosted board") and multi.concepts_split == "multi"


def test_thisismy_multi_vqa_folder_of_pair_files(tmp_path: Path) -> None:
    multi = tmp_path / "Multi-concept"
    _img(multi / "test" / "Zak_Zaks dog kona" / "0.png")
    for pair in ("Zak_Zaks dog kona", "Zak_Zaks dog coffee"):
        entry = {"question": "Who is with Zak?", "answer": "His dog"}
        _json(multi / "VQA" / f"{pair}.json", {pair: {"./test/Zak_Zaks dog kona/0.png": entry}})
    qa = read_qaset("thisismy-multi-vqa", multi / "VQA", media_root=multi)
    assert len(qa) == 2 and qa.items[0].id.startswith("Zak_Zaks dog coffee:")  # ids stay unique across files
    assert {c for it in qa.items for c in it.concepts} == {"Zak", "Zak's dog Kona", "Zak's dog Coffee"}


def test_thisismy_video_qa_video_chatgpt_list_with_segments_csv(tmp_path: Path) -> None:
    root = tmp_path / "this-is-my"
    (root / "eval_segment").mkdir(parents=True)
    (root / "eval_segment" / "9b5d9568.mp4").write_bytes(b"\x00")  # only its path matters to the reader
    (root / "this-is-my-dataset").mkdir()
    (root / "this-is-my-dataset" / "segments.csv").write_text(
        "segment_id,is_anchor,instance_name,video_id,channel_id,start_time,end_time,query\n"
        "9b5d9568,True,Casey's friend marlan,Ipv_LWcdfC0,UC,234.5,235.5,man\n"
    )
    qa_file = _json(
        tmp_path / "video_qa.json",
        [
            {"video_name": "9b5d9568", "Q": "Where is <sks> standing?", "A": "At an intersection"},
            {"video_name": "9b5d9568", "Q": "What is he wearing?", "A": "A jacket", "concept": "Caseys son"},
            {"video_name": "missing", "Q": "?", "A": "x", "concept": "Casey"},
        ],
    )
    qa = read_qaset("thisismy-video-qa", qa_file, media_root=root)
    first, second = qa.items
    assert first.video and first.kind == "open" and first.media == root / "eval_segment" / "9b5d9568.mp4"
    assert first.concepts == ("Casey's friend Marlan",) and first.question == "Where is Casey's friend Marlan standing?"
    assert second.concepts == ("Casey's son",) and qa.report.counts["missing_media"] == 1


def test_myvlm_captions(tmp_path: Path) -> None:
    root = tmp_path / "myvlm"
    for c in ("colorful teapot", "billy dog"):
        for i in range(6):
            _img(root / "data" / c / f"{i}.jpg")
    _json(root / "data" / "billy dog" / "captions.json", {"5.jpg": ["billy dog lies on the grass."]})
    qa = read_qaset("myvlm-captions", root)
    assert len(qa) == 4 and {it.kind for it in qa.items} == {"caption"}  # 6 photos - 4 references, per concept
    billy = [it for it in qa.items if it.concepts == ("billy dog",)]
    assert [it.media.name for it in billy] == ["4.jpg", "5.jpg"] and billy[1].meta["captions"][0].startswith("billy")
    assert "billy" not in billy[0].question.lower()  # the name must come from personalization
    assert qa.concepts_format == "myvlm" and qa.concepts_root == root


def test_qa_jsonl(tmp_path: Path) -> None:
    _img(tmp_path / "p" / "a.png")
    lines = [
        {"id": "q1", "image": "p/a.png", "concepts": ["Bruno"], "question": "What is Bruno holding?",
         "options": {"A": "A ball", "B": "A stick"}, "correct": "b", "aliases": {"Bruno": ["Bru"]}},
        {"image": "p/a.png", "concept": "Bruno", "question": "Where is Bruno?", "answer": "On the sofa"},
        {"image": "p/a.png", "concepts": ["Bruno"], "kind": "caption"},
    ]  # fmt: skip
    f = tmp_path / "qa.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    qa = read_qaset("qa-jsonl", f)
    assert [(it.id, it.kind) for it in qa.items] == [("q1", "choice"), ("line2", "open"), ("line3", "caption")]
    assert qa.items[0].correct == "B" and qa.names_of("Bruno") == ("Bruno", "Bru")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"bo": ["x"]}', "must map image paths"),
        ('{"bo": {"0.png": {"q": "?"}}}', 'expected an object with "question"'),
        ('{"bo": {"0.png": {"question": "?", "options": {"A": "x"}, "correct_answer": "A"}}}', "at least 2 options"),
        (
            '{"bo": {"0.png": {"question": "?", "options": {"A": "x", "B": "y"}, "correct_answer": "C"}}}',
            "must be one of A, B",
        ),
        (
            '{"bo": {"0.png": {"question": "?", "options": {"1": "x", "B": "y"}, "correct_answer": "B"}}}',
            "single letters",
        ),
        ('{"bo": {"0.png": {"question": "?"}}}', 'needs "options"'),
        ('{"bo": {"0.png": {"question": "", "answer": "x"}}}', "non-empty text"),
        ('{"bo": {"missing.png": {"question": "?", "answer": "x"}}}', "no usable question.*missing_media"),
    ],
)
def test_bad_vqa_files(tmp_path: Path, content: str, match: str) -> None:
    _img(tmp_path / "0.png")
    f = tmp_path / "qa.json"
    f.write_text(content)
    with pytest.raises(DatasetError, match=match):
        read_qaset("yollava-vqa", f)


def test_bad_format_and_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown QA format 'vqa'; available: yollava-vqa"):
        read_qaset("vqa", tmp_path)
    with pytest.raises(DatasetError, match="VQA file not found"):
        read_qaset("yollava-vqa", tmp_path / "nope.json")
    with pytest.raises(DatasetError, match="no VQA JSON found"):
        read_qaset("thisismy-vqa", tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"image": "x.png", "concepts": [], "question": "?", "answer": "a"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: \"concepts\" must be a non-empty list"):
        read_qaset("qa-jsonl", tmp_path / "bad.jsonl")
    assert set(QA_FORMATS) >= {"yollava-vqa", "thisismy-vqa", "thisismy-multi-vqa", "thisismy-video-qa"}
