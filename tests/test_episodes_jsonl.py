from __future__ import annotations

import json
from pathlib import Path

import pytest

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.episodes_jsonl import load_episodes, write_episodes


def _record(**over: object) -> dict:
    rec = {
        "id": "e1",
        "supports": [{"image": "a.png", "box": [1, 2, 11, 12]}, {"image": "b.png", "box": [0, 0, 5, 5]}],
        "query": {"image": "q.png", "box": [3, 3, 9, 9]},
    }
    rec.update(over)
    return rec


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = _write(
        tmp_path / "sub" / "eps.jsonl",
        [json.dumps(_record()), json.dumps(_record(id="e2", query={"image": "q.png", "box": None}))],
    )
    eps = load_episodes(f)
    assert [e.id for e in eps] == ["e1", "e2"]
    assert eps[0].supports[0].image == tmp_path / "sub" / "a.png"
    assert eps[0].supports[0].box == Box(1, 2, 11, 12)
    assert eps[0].k == 2
    assert eps[1].query_box is None and eps[1].is_absent


def test_round_trip(tmp_path: Path) -> None:
    f = _write(tmp_path / "eps.jsonl", [json.dumps(_record(meta={"video": "v1"}))])
    eps = load_episodes(f)
    out = tmp_path / "out" / "copy.jsonl"
    assert write_episodes(eps, out) == 1
    back = load_episodes(out)
    assert back[0].supports[1].image.resolve() == eps[0].supports[1].image.resolve()
    assert back[0].query_box == eps[0].query_box and back[0].meta == {"video": "v1"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"eps.jsonl:2: not valid JSON"),
        (json.dumps(_record(supports=[])), r"eps.jsonl:2 \(episode 'e1'\): 'supports' must be a non-empty list"),
        (json.dumps(_record(supports=[{"image": "a.png", "box": [5, 5, 5, 9]}])), "zero or negative area"),
        (json.dumps(_record(supports=[{"image": "a.png", "box": [1, 2, 3]}])), r"'box' must be \[x1, y1, x2, y2\]"),
        (json.dumps({"supports": []}), "missing key 'query'"),
        (json.dumps([1, 2]), "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    f = _write(tmp_path / "eps.jsonl", [json.dumps(_record()), line])
    with pytest.raises(DatasetError, match=message):
        load_episodes(f)


def test_missing_file_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_episodes(tmp_path / "nope.jsonl")
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DatasetError, match="no episodes"):
        load_episodes(empty)


def test_iploc_json_single_and_dir(tmp_path: Path) -> None:
    episode = [
        {"element": "cup", "image_path": ["f0.jpg", "f5.jpg"], "bbox": ["[1, 2, 30, 40]", "[2, 3, 31, 41]"]},
        {"element": "cup", "image_path": ["f9.jpg"], "bbox": ["[5, 6, 35, 46]"]},
    ]
    d = tmp_path / "iploc"
    d.mkdir()
    (d / "ep_a.json").write_text(json.dumps(episode))
    (d / "ep_b.json").write_text(json.dumps([episode, episode]))
    eps = load_episodes(d)
    assert len(eps) == 3
    first = eps[0]
    assert first.id == "ep_a" and first.k == 2
    assert first.query_image == d / "f9.jpg" and first.query_box == Box(5, 6, 35, 46)
    assert "cup" not in json.dumps(first.meta)  # the category name is never used


def test_iploc_bad_bbox(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([{"element": "x", "image_path": ["a.jpg", "b.jpg"], "bbox": ["[1, 2, 3, 4]", "oops"]}]))
    with pytest.raises(DatasetError, match="not a list of four numbers"):
        load_episodes(f)


def test_with_shots(tmp_path: Path) -> None:
    f = _write(tmp_path / "eps.jsonl", [json.dumps(_record())])
    ep = load_episodes(f)[0]
    assert ep.with_shots(1).k == 1
    with pytest.raises(DatasetError, match="shots must be >= 1"):
        ep.with_shots(0)
    with pytest.raises(DatasetError, match="has 2 supports"):
        ep.with_shots(3)
