"""CLI `eval-recognition`, issue 16: a temporary memory unless --memory is given, reused concepts reported, the
split selectable (This-Is-My multi-concept), `--json`. Real photos (scikit-image samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from focuskit.cli.main import app
from focuskit.cli.recognition import _format_and_split
from focuskit.core.errors import ConfigError
from focuskit.core.io import atomic_write_json
from focuskit.memory.store import ConceptMemory
from focuskit.personalize.samples import MOTORBIKE_BOX, sample_photos

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rec") / "dataset"
    photos = sample_photos()
    for sub, name in (("references", "motorcycle_left"), ("positives", "motorcycle_right"),
                      ("negatives/other", "astronaut")):  # fmt: skip
        (root / "motorbike" / sub).mkdir(parents=True)
        photos[name].save(root / "motorbike" / sub / f"{name}.jpg", quality=95)
    atomic_write_json(root / "motorbike" / "boxes.json", {"references/motorcycle_left.jpg": MOTORBIKE_BOX.as_list()})
    return root


def test_temporary_memory_by_default_and_reused_concepts_reported(dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval-recognition", "--dataset", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["concepts"] == {"memory": None, "added": ["motorbike"], "reused": []}
    assert record["metrics"]["mean"]["positive_accuracy"] == 1.0
    assert not any(dataset.rglob("memory.sqlite"))  # nothing written into the dataset either
    mem = tmp_path / "mem"
    with ConceptMemory(mem) as m:  # the user's memory already holds a concept of that name
        m.add("motorbike", [dataset / "motorbike" / "references" / "motorcycle_left.jpg"], boxes=[MOTORBIKE_BOX])
    second = runner.invoke(app, ["eval-recognition", "--dataset", str(dataset), "--memory", str(mem)])
    assert second.exit_code == 0, second.output
    assert "reused 1 concept(s) already in" in second.output and "'motorbike'" in second.output
    assert "recognition on" in second.stdout and "best tau" in second.stdout  # the table, uncut


@pytest.mark.parametrize(
    "fmt, split, expected",
    [
        ("thisismy", None, ("thisismy", None)),
        ("thisismy", "multi", ("thisismy", "multi")),
        ("thisismy-multi", None, ("thisismy", "multi")),
        ("concepts", None, ("concept-folders", None)),
        ("thisismy", "bogus", "has splits single, multi"),
        ("got10k", None, "must be a concept dataset format"),
    ],
)
def test_format_and_split(fmt: str, split: str | None, expected: tuple[str, str | None] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            _format_and_split(fmt, split)
    else:
        assert _format_and_split(fmt, split) == expected


def test_bad_split_is_refused_before_any_work(dataset: Path) -> None:
    result = runner.invoke(app, ["eval-recognition", "--dataset", str(dataset), "--format", "thisismy",
                                 "--split", "double"])  # fmt: skip
    assert result.exit_code == 2 and "has splits single, multi" in result.output
