"""`benchmarks/toy_ablation.py` end to end at smoke size: the report a user reads, and the checkpoint `--train-only
--save` writes, which `focuskit eval --engine vlm` must load like any other. The numbers are noise at this size;
what is checked is that every row, seed, column and file is there and consistent."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.toy.presets import SMOKE
from benchmarks.toy_ablation import main as toy_main
from focuskit.cli.main import app


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy_out")
    toy_main(["--smoke", "--out", str(out), "--workdir", str(tmp_path_factory.mktemp("toy_work"))])
    return out


def test_smoke_report_has_every_row_seed_and_column(smoke_run: Path) -> None:
    result = json.loads((smoke_run / "toy_ablation_smoke.json").read_text())
    rows = result["rows"]
    expected = {(name, seed) for name in SMOKE.rows for seed in SMOKE.seeds}
    expected |= {(f"grid_l{lam}_m{m}", SMOKE.seeds[0]) for lam, m in SMOKE.grid}
    assert {(r["name"], r["seed"]) for r in rows} == expected | {("base", 0), ("locate", 0)}
    for r in rows:
        for k in SMOKE.shots:
            assert 0.0 <= r["pick_rate"][str(k)] <= 1.0 and 0.0 <= r["miou"][str(k)] <= 1.0
            assert len(r["per_episode_iou"][str(k)]) == len(r["per_episode_pick"][str(k)]) > 0
        shares = r["attention_shares"]  # focuskit explain's statistic, asked for on every row
        assert set(shares) >= {"query_image", "support_boxes", "support_images"}
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-3)
        assert "model" not in r  # the report keeps figures, not paths into a deleted work directory
    text = (smoke_run / "toy_ablation_smoke.md").read_text()
    assert "+ SFT + Attn (first k)" in text and "grid_l0.05_m0.25" in text
    assert "sft_attn_first5 - sft" in text and "sft_grpo - sft" in text  # paired differences
    assert "base - locate" in text and "base (locate + match pretraining)" in text  # the match stage, named
    assert result["base"]["curves"]["pointer_search_mass"]  # the match stage ran with its supervision
    assert (smoke_run / "toy_ablation_smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pretrained_base_is_reused_and_the_trained_row_is_evaluated_by_focuskit_eval(tmp_path: Path) -> None:
    base, engine = tmp_path / "base", tmp_path / "engine"
    toy_main(["--smoke", "--pretrain-only", "--save", str(base), "--workdir", str(tmp_path / "w1")])
    built = json.loads((base / "toy_recipe.json").read_text())
    assert [s["name"] for s in built["pretrain"]] == ["locate", "match0", "match1"]
    assert built["pretrain"][2]["curves"]["pointer_gather_mass"]  # the second match stage gathers (box -> cells)

    work = tmp_path / "w2"
    toy_main(["--smoke", "--train-only", "--base", str(base), "--save", str(engine), "--workdir", str(work)])
    assert not (work / "base").exists() and not (work / "match0").exists()  # the base was not trained again
    recipe = json.loads((engine / "toy_recipe.json").read_text())
    assert recipe["preset"]["name"] == "smoke" and set(recipe["heldout"]["pick_rate"]) == {"1", "2", "4"}

    episodes = work / "data" / "eval.jsonl"
    out = tmp_path / "eval.json"
    args = ["eval", "--engine", "vlm", "--model", str(engine), "--episodes", str(episodes), "--shots", "1",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["summary"][0]
    assert summary["episodes"] == len(episodes.read_text().splitlines())
    assert 0.0 <= summary["miou"] <= 1.0


@pytest.mark.parametrize(
    ("recipe", "flags"),
    [(None, []), ({"mutations": None}, []), ({}, ["--hard"])],
    ids=["not-a-checkpoint", "hard-base-for-easy-rows", "easy-base-for-hard-rows"],
)
def test_a_base_that_is_not_a_checkpoint_or_was_built_on_other_data_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: dict[str, object] | None, flags: list[str]
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    if recipe is not None:  # a checkpoint whose recorded recipe used other look-alikes than the run asks for
        (base / "config.json").write_text("{}")
        preset = json.loads(json.dumps(dataclasses.asdict(SMOKE))) | recipe
        (base / "toy_recipe.json").write_text(json.dumps({"preset": preset}))
    with pytest.raises(SystemExit) as exc:
        toy_main(["--smoke", *flags, "--base", str(base), "--workdir", str(tmp_path / "work")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("focuskit: error: --base")
    assert ("no config.json" in err) if recipe is None else ("mutations" in err)
    assert not (tmp_path / "work").exists()


def test_train_only_refuses_a_non_empty_save_directory_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        toy_main(["--smoke", "--train-only", "--save", str(taken), "--workdir", str(tmp_path / "work")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("focuskit: error: --save")
    assert not (tmp_path / "work").exists() and (taken / "keep.txt").read_text() == "mine"
