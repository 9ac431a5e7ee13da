"""Attention analysis: shares partition the answer rows' attention and match the model's own attention maps."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from focuskit.analysis.attention import (
    SEGMENTS,
    explain_episode,
    heatmap_overlay,
    parse_layers,
    summarize_shares,
    write_report,
)
from focuskit.core.errors import ConfigError, ModelError
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm, encode_episode
from focuskit.models.vlms.encoding import IGNORE_INDEX

TINY = TinyVLMConfig(num_layers=3, min_pixels=56 * 56, max_pixels=56 * 56)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SynthConfig(episodes=2, shots=2, image_size=56, objects=2, seed=9)
    return write_synth_dataset(config, tmp_path_factory.mktemp("synth"), progress=False)


@pytest.fixture(scope="module")
def eager_bundle():
    return build_tiny_vlm(TINY, attn_implementation="eager")


def test_shares_partition_attention_and_match_output_attentions(eager_bundle, episodes: Path) -> None:
    ep = load_episodes(episodes)[0]
    report = explain_episode(eager_bundle, ep, answer="target", layers="all")
    assert set(report.shares) == set(SEGMENTS)
    assert sum(report.shares.values()) == pytest.approx(1.0, abs=1e-4)
    for layer in report.shares_per_layer:
        assert sum(layer.values()) == pytest.approx(1.0, abs=1e-4)

    # Reference: the same statistic from the model's own full attention maps.
    enc = encode_episode(eager_bundle.processor, ep, with_answer=True, prompt=eager_bundle.prompt)
    with torch.no_grad():
        out = eager_bundle.model(**enc.inputs, output_attentions=True)
    answer_pos = torch.nonzero(enc.labels[0] != IGNORE_INDEX).flatten()
    rows = answer_pos - 1
    att = torch.stack([a[0][:, rows, :].mean(dim=(0, 1)) for a in out.attentions]).mean(dim=0)
    assert report.shares["support_boxes"] == pytest.approx(float(att[enc.box_token_mask[0]].sum()), abs=1e-5)
    assert report.shares["query_image"] == pytest.approx(float(att[enc.query_image_mask[0]].sum()), abs=1e-5)
    assert report.token_counts["support_boxes"] == int(enc.box_token_mask.sum())
    assert report.answer_rows == len(answer_pos)


def test_image_grids_follow_the_token_layout(eager_bundle, episodes: Path) -> None:
    ep = load_episodes(episodes)[1]
    report = explain_episode(eager_bundle, ep, answer="target")
    assert [im.role for im in report.images] == ["support 1", "support 2", "query"]
    assert all(im.grid is not None and im.grid.shape == (2, 2) for im in report.images)  # 56 px / 28 px per token
    assert report.images[-1].share == pytest.approx(report.shares["query_image"], abs=1e-5)
    assert sum(im.share for im in report.images[:-1]) == pytest.approx(report.shares["support_images"], abs=1e-5)


def test_generated_answer_and_layer_selection(eager_bundle, episodes: Path) -> None:
    ep = load_episodes(episodes)[0]
    report = explain_episode(eager_bundle, ep, answer="generated", layers="last:1", max_new_tokens=5)
    assert report.layers == [2]
    assert 1 <= report.answer_rows <= 5
    assert report.answer_source == "generated"
    assert summarize_shares([report, report])["other"] == pytest.approx(report.shares["other"])


def test_non_eager_model_is_refused(episodes: Path) -> None:
    bundle = build_tiny_vlm(TINY, attn_implementation="sdpa")
    with pytest.raises(ModelError, match="eager"):
        explain_episode(bundle, load_episodes(episodes)[0], answer="target")


@pytest.mark.parametrize(
    ("spec", "expected", "expectation"),
    [
        ("all", [0, 1, 2, 3], nullcontext()),
        ("first:2", [0, 1], nullcontext()),
        ("last:3", [1, 2, 3], nullcontext()),
        ("2,0", [0, 2], nullcontext()),
        ("first:5", None, pytest.raises(ConfigError, match="the model has 4 layers")),
        ("7", None, pytest.raises(ConfigError, match=r"0\.\.3")),
        ("middle", None, pytest.raises(ConfigError, match="'all', 'first:K'")),
    ],
)
def test_parse_layers(spec: str, expected: list[int] | None, expectation: AbstractContextManager) -> None:
    with expectation:
        assert parse_layers(spec, 4) == expected


def test_heatmap_is_hot_where_the_attention_is() -> None:
    image = Image.new("RGB", (80, 60), (128, 128, 128))
    grid = np.zeros((3, 4))
    grid[0, 0] = 1.0
    arr = np.asarray(heatmap_overlay(image, grid), dtype=np.int64)
    assert arr.shape == (60, 80, 3)
    top_left, bottom_right = arr[:15, :20], arr[45:, 60:]
    # jet: hot is red, cold is blue
    assert top_left[..., 0].mean() > bottom_right[..., 0].mean() + 50
    assert bottom_right[..., 2].mean() > top_left[..., 2].mean() + 50


def test_write_report_and_cli(eager_bundle, episodes: Path, tmp_path: Path) -> None:
    ep = load_episodes(episodes)[0]
    report = explain_episode(eager_bundle, ep, answer="target")
    paths = write_report(report, ep, tmp_path / "direct")
    assert {p.name for p in paths} == {
        "attention.json", "shares.png", "heatmap_support1.png", "heatmap_support2.png", "heatmap_query.png",
    }  # fmt: skip
    assert Image.open(tmp_path / "direct" / "heatmap_query.png").size == (384, 384)  # enlarged from 56 px

    from focuskit.cli.main import app

    model_dir = tmp_path / "model"
    eager_bundle.save(model_dir)
    out = tmp_path / "cli"
    args = ["explain", "--model", str(model_dir), "--episode", str(episodes), "--index", "1", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--answer", "target"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "attention.json").read_text())
    assert data["episode"] == load_episodes(episodes)[1].id
    assert sum(data["shares"].values()) == pytest.approx(1.0, abs=1e-4)
    assert (out / "heatmap_query.png").is_file() and (out / "shares.png").is_file()

    bad = CliRunner().invoke(app, [*args[:-4], "--index", "5", "--out", str(out)])
    assert bad.exit_code == 2
    assert "out of range" in bad.output and "holds 2 episode(s)" in bad.output
