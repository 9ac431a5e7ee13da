"""LibraryIndex: incremental, resumable indexing of real photos and videos, and search from stored features."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from focuskit.core.box import Box, iou
from focuskit.core.errors import DatasetError, MemoryStoreError
from focuskit.library import LibraryConfig, LibraryIndex
from focuskit.library.store import SHARD_DIR
from focuskit.memory.store import ConceptMemory

REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
BOX_SUPPORT = ("box_f0000.jpg", Box(296.0, 14.0, 597.0, 242.0))
# Ground-truth boxes of the same box in other frames (from the real-photo episode file).
BOX_TRUTH = {"box_f0100.jpg": Box(222.0, 20.0, 545.0, 268.0), "box_f0230.jpg": None}
PHOTOS = ("box_f0000.jpg", "box_f0100.jpg", "box_f0230.jpg", "cup_f0010.jpg", "cup_f0080.jpg", "coffee.jpg")
FAST = LibraryConfig(proposers=["windows"], batch_size=2)
"""Weights-free proposals keep most tests fast; one test runs the default (SSD + windows)."""


def _truth_boxes() -> dict[str, Box]:
    out = {}
    for line in (REAL / "episodes.jsonl").read_text().splitlines():
        ep = json.loads(line)
        q = ep["query"]
        if q["box"] is not None and q["image"].startswith("box_f"):
            out[q["image"]] = Box.from_xyxy(q["box"])
    return out


class CountingEncoder:
    """The real encoder, counting calls; `fail_after` raises KeyboardInterrupt like a user's Ctrl-C."""

    def __init__(self, inner: object, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[attr-defined]
        self.dim = inner.dim  # type: ignore[attr-defined]
        self.stride = inner.stride  # type: ignore[attr-defined]
        self.calls = 0
        self.fail_after = fail_after

    def encode(self, image: Image.Image) -> object:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.encode(image)  # type: ignore[attr-defined]


class RenamedEncoder(CountingEncoder):
    def __init__(self, inner: object, name: str) -> None:
        super().__init__(inner)
        self.name = name


@pytest.fixture(scope="module")
def encoder() -> object:
    from focuskit.models.encoders import create_encoder

    return create_encoder("mobilenetv2")


@pytest.fixture(scope="module")
def memory(encoder: object, tmp_path_factory: pytest.TempPathFactory) -> ConceptMemory:
    mem = ConceptMemory(tmp_path_factory.mktemp("mem"), encoder=encoder)
    name, box = BOX_SUPPORT
    mem.add("box", [REAL / name], boxes=[box])
    return mem


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        shutil.copy(REAL / name, (root / "trip" if i % 2 else root) / name)
    return root


def _paths(hits: list) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_search_finds_the_concept_in_other_photos_and_not_in_negatives(
    photos: Path, tmp_path: Path, encoder: object, memory: ConceptMemory
) -> None:
    index = LibraryIndex(tmp_path / "state", LibraryConfig(), encoder=encoder)  # default: SSD + windows
    report = index.update(photos, progress=False)
    assert (report.added, report.failed, report.items) == (len(PHOTOS), [], len(PHOTOS))

    hits = index.search("box", memory)
    found = _paths(hits)
    assert {"box_f0000.jpg", "box_f0100.jpg", "box_f0230.jpg"} <= set(found)
    assert not any(n.startswith(("cup", "coffee")) for n in found)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    truth = _truth_boxes()
    by_name = {Path(h.path).name: h for h in hits}
    for name in ("box_f0100.jpg", "box_f0230.jpg"):
        assert iou(by_name[name].boxes[0], truth[name]) > 0.5, (name, by_name[name].boxes[0], truth[name])
    assert all(h.image == photos / h.path and h.image.is_file() for h in hits)
    assert len(index.search("box", memory, top=1)) == 1


def test_update_is_incremental_and_drops_deleted_files(
    photos: Path, tmp_path: Path, encoder: object, memory: ConceptMemory
) -> None:
    counting = CountingEncoder(encoder)
    index = LibraryIndex(tmp_path / "state", FAST, encoder=counting)
    index.update(photos, progress=False)
    assert counting.calls == len(PHOTOS)

    again = index.update(photos, progress=False)
    assert (again.computed, again.unchanged, counting.calls) == (0, len(PHOTOS), len(PHOTOS))

    # Change one photo's content, delete another, add a new one: exactly those are computed or dropped.
    changed = photos / "trip" / "box_f0100.jpg"
    Image.open(REAL / "cup_f0080.jpg").save(changed)
    (photos / "box_f0230.jpg").unlink()
    shutil.copy(REAL / "box_f0130.jpg", photos / "new.jpg")
    report = index.update(photos, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, len(PHOTOS) - 2)
    assert counting.calls == len(PHOTOS) + 2

    found = _paths(index.search("box", memory))
    assert "box_f0230.jpg" not in found  # deleted
    assert "box_f0100.jpg" not in found  # now shows a cup
    assert "new.jpg" in found


def test_hash_check_skips_touched_files_that_stat_would_recompute(
    photos: Path, tmp_path: Path, encoder: object
) -> None:
    counting = CountingEncoder(encoder)
    config = LibraryConfig(proposers=["windows"], check="hash")
    index = LibraryIndex(tmp_path / "state", config, encoder=counting)
    index.update(photos, progress=False)
    target = photos / "box_f0000.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = index.update(photos, progress=False)
    assert (report.computed, counting.calls) == (0, len(PHOTOS))
    index.config.check = "stat"
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    assert index.update(photos, progress=False).updated == 1


def test_interrupted_run_resumes_without_recomputing_committed_batches(
    photos: Path, tmp_path: Path, encoder: object, memory: ConceptMemory
) -> None:
    state = tmp_path / "state"
    dying = CountingEncoder(encoder, fail_after=3)  # batch_size 2: batch 1 committed, batch 2 lost mid-way
    with pytest.raises(KeyboardInterrupt):
        LibraryIndex(state, FAST, encoder=dying).update(photos, progress=False)

    resumed = CountingEncoder(encoder)
    index = LibraryIndex(state, FAST, encoder=resumed)
    report = index.update(photos, progress=False)
    assert (report.added, report.unchanged, resumed.calls) == (len(PHOTOS) - 2, 2, len(PHOTOS) - 2)

    clean = LibraryIndex(tmp_path / "clean", FAST, encoder=encoder)
    clean.update(photos, progress=False)
    resumed_hits = [(h.path, round(h.score, 4)) for h in index.search("box", memory, tau=0.3)]
    clean_hits = [(h.path, round(h.score, 4)) for h in clean.search("box", memory, tau=0.3)]
    assert resumed_hits == clean_hits


def test_leftovers_of_a_crash_are_removed_and_search_never_recomputes(
    photos: Path, tmp_path: Path, encoder: object, memory: ConceptMemory
) -> None:
    index = LibraryIndex(tmp_path / "state", FAST, encoder=encoder)
    index.update(photos, progress=False)
    shards = tmp_path / "state" / SHARD_DIR
    stray = shards / "deadbeef.npy"  # shard written, process killed before its SQLite commit
    np.save(stray, np.zeros((3, encoder.dim), np.float16))  # type: ignore[attr-defined]
    partial = shards / ".x.npy.123.tmp"  # atomic write interrupted
    partial.write_bytes(b"half")
    index.update(photos, progress=False)
    assert not stray.exists() and not partial.exists()

    # A fresh index object whose encoder would fail: search works from the stored features alone.
    blind = LibraryIndex(tmp_path / "state", FAST, encoder=CountingEncoder(encoder, fail_after=0))
    assert "box_f0100.jpg" in _paths(blind.search("box", memory))


def test_encoder_mismatch_is_refused_until_reindex(
    photos: Path, tmp_path: Path, encoder: object, memory: ConceptMemory
) -> None:
    LibraryIndex(tmp_path / "state", FAST, encoder=encoder).update(photos, progress=False)
    other = RenamedEncoder(encoder, "another-encoder")
    index = LibraryIndex(tmp_path / "state", FAST, encoder=other)
    with pytest.raises(MemoryStoreError, match="--reindex"):
        index.update(photos, progress=False)
    report = index.update(photos, reindex=True, progress=False)
    assert (report.added, other.calls) == (len(PHOTOS), len(PHOTOS))
    # The memory's views were made by 'mobilenetv2', the index now by 'another-encoder': search refuses to mix.
    with pytest.raises(MemoryStoreError, match="another-encoder"):
        index.search("box", memory)


def test_videos_are_sampled_and_hits_name_the_frame(tmp_path: Path, encoder: object, memory: ConceptMemory) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    frames = ["cup_f0010.jpg", "box_f0100.jpg", "cup_f0080.jpg", "box_f0230.jpg"]
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (640, 480))
    for name in frames:
        writer.write(cv2.cvtColor(np.asarray(Image.open(REAL / name).convert("RGB")), cv2.COLOR_RGB2BGR))
    writer.release()
    config = LibraryConfig(proposers=["windows"], video_every_s=0.5)
    index = LibraryIndex(tmp_path / "state", config, encoder=encoder)
    report = index.update(root, progress=False)
    assert (report.added, report.items) == (1, len(frames))
    hits = index.search("box", memory)
    assert sorted(h.frame for h in hits) == [1, 3]  # the box frames, not the cup frames
    assert all(h.path == "clip.mp4" and h.time_s == pytest.approx(h.frame / 2.0) for h in hits)


def test_bad_files_are_reported_once_and_the_rest_is_indexed(photos: Path, tmp_path: Path, encoder: object) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    (photos / ".hidden.jpg").write_bytes((REAL / "coffee.jpg").read_bytes())
    outside = tmp_path / "outside.jpg"
    shutil.copy(REAL / "coffee.jpg", outside)
    (photos / "escape.jpg").symlink_to(outside)
    counting = CountingEncoder(encoder)
    index = LibraryIndex(photos / "state-inside", FAST, encoder=counting)  # state inside the folder: skipped
    report = index.update(photos, progress=False)
    assert [p for p, _ in report.failed] == ["broken.jpg"]
    assert "broken.jpg" in report.failed[0][0] and "cannot decode" in report.failed[0][1]
    assert report.added == len(PHOTOS) and counting.calls == len(PHOTOS)
    assert index.update(photos, progress=False).failed == []  # unchanged: not retried every run
    assert index.status()["failed"] == 1


def test_missing_folder_is_a_clear_error(tmp_path: Path, encoder: object) -> None:
    with pytest.raises(DatasetError, match="not found"):
        LibraryIndex(tmp_path / "state", FAST, encoder=encoder).update(tmp_path / "nope", progress=False)


def test_cli_index_then_search_json(photos: Path, tmp_path: Path, memory: ConceptMemory) -> None:
    from focuskit.cli.main import app

    mem_dir = memory.directory
    cfg = tmp_path / "library.yaml"
    cfg.write_text("proposers: [windows]\n")
    state = tmp_path / "cli-state"
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "library",
            "index",
            str(photos),
            "--memory",
            str(mem_dir),
            "--state",
            str(state),
            "--config",
            str(cfg),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["added"] == len(PHOTOS)
    out = runner.invoke(
        app,
        [
            "library",
            "search",
            "box",
            "--memory",
            str(mem_dir),
            "--state",
            str(state),
            "--config",
            str(cfg),
            "--json",
            "--top",
            "2",
        ],
    )
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)
    assert len(hits) == 2 and all(Path(h["path"]).name.startswith("box_f") for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] and len(hits[0]["boxes"][0]) == 4

    out = runner.invoke(app, ["library", "search", "bicycle", "--memory", str(mem_dir), "--state", str(state)])
    assert out.exit_code == 2
    assert "no concept 'bicycle'" in out.output and "'box'" in out.output


def test_demo_library_is_built_from_shipped_photos_and_a_video(tmp_path: Path) -> None:
    from focuskit.library.demo import SEED_CONCEPT, build_demo_library
    from focuskit.library.media import sample_frames, scan_media

    folder = build_demo_library(tmp_path / "demo")
    files = scan_media(folder)
    photos = [f for f in files if f.kind == "image"]
    assert len(photos) >= 40 and SEED_CONCEPT[1] in {f.path for f in photos}
    video = folder / "videos" / "box_clip.mp4"
    frames = list(sample_frames(video, every_s=1.0, max_frames=60))
    assert len(frames) == 6 and frames[0].image.size == (640, 480)
    before = {f.path: f.mtime_ns for f in files}
    build_demo_library(tmp_path / "demo")  # idempotent: nothing rewritten
    assert {f.path: f.mtime_ns for f in scan_media(folder)} == before
