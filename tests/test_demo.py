"""`focuskit demo`: runs the real engine on the built-in photos, writes annotated images, prints a summary."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from focuskit.cli.demo import annotate_episode
from focuskit.cli.main import app
from focuskit.core.box import Box
from focuskit.core.episode import Prediction
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes

runner = CliRunner()


def test_demo_writes_annotated_images_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--limit", "2", "--shots", "2"])
    assert result.exit_code == 0, result.output
    ids = [e.id for e in load_episodes(realphotos_episodes())[:2]]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{i}.jpg" for i in ids)
    for f in files:
        with Image.open(out / f) as img:
            assert img.format == "JPEG" and img.height > 480  # the query plus the support strip
    text = result.stdout
    assert "matching on 2 built-in real-photo episodes" in text
    miou = float(re.search(r"mIoU (\d\.\d+)", text).group(1))  # type: ignore[union-attr]
    assert 0.0 <= miou <= 1.0
    assert re.search(r"found \(IoU >= 0\.5\) \d/2 present", text)
    assert f"annotated images: {out}/ (2 files" in text


def test_demo_template_engine_and_bad_options(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["demo", "--engine", "template", "--out", str(tmp_path), "--limit", "1"])
    assert ok.exit_code == 0 and "template on 1 built-in" in ok.stdout
    bad = runner.invoke(app, ["demo", "--shots", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "focuskit: error: --shots must be >= 1, got 0" in bad.stderr
    unknown = runner.invoke(app, ["demo", "--engine", "magic", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown engine 'magic'" in unknown.stderr


def test_annotation_shows_truth_found_box_and_supports() -> None:
    episode = next(e for e in load_episodes(realphotos_episodes()) if e.k == 4 and e.query_box is not None)
    query = Image.open(episode.query_image)
    found = annotate_episode(episode, Prediction(Box(10, 10, 100, 100), 0.9))
    absent = annotate_episode(episode, Prediction(None, 0.1))
    assert found.width >= query.width and found.height > query.height
    assert found.tobytes() != absent.tobytes()  # the found box is drawn
