"""ConceptMemory: adding, persistence, editing, encoder tagging, bad input, corruption, crashes and concurrency.

The encoder is a real MobileNetV2 built with random weights at a 64-px input (fast; the store does not care what
the features mean). Crash tests run a real child process and SIGKILL it at chosen points of an add.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import BoxError, ConfigError, ImageError, MemoryStoreError
from focuskit.memory.index import FaissIndex
from focuskit.memory.store import (
    INDEX_FILE,
    AugmentConfig,
    ConceptMemory,
    EncoderSpec,
    MemoryConfig,
    ProposerSpec,
    open_memory,
)
from focuskit.models.encoders import Encoder

ENCODER_SPEC = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 64})
OTHER_SPEC = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 64, "layer": "s32"})


def seeded(spec: EncoderSpec) -> Encoder:
    """Random weights, but the same ones in every process (a memory must be read with the encoder that wrote it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return spec.create()


ENCODER = seeded(ENCODER_SPEC)
OTHER_ENCODER = seeded(OTHER_SPEC)
PLAIN = MemoryConfig(augment=AugmentConfig(hflip=False, zoom_out=[]))
REPO = Path(__file__).resolve().parents[1]


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    arr[16:48, 20:60] = rng.integers(0, 255, size=3)
    return Image.fromarray(arr)


def new_memory(path: Path, config: MemoryConfig = PLAIN, encoder: Encoder = ENCODER) -> ConceptMemory:
    return ConceptMemory(path, encoder=encoder, config=config, proposer=ProposerSpec("windows"))


def finds_itself(mem: ConceptMemory, name: str) -> bool:
    """A stored view's own region, embedded again, retrieves its concept with cosine ~1."""
    view = mem.views(name)[0]
    emb = mem.encoder.encode(view.image).pool_boxes(view.box.to_array()[None])
    scores = mem.match(emb)
    j = int(np.argmax(scores.scores[0]))
    return scores.names[j] == name and scores.scores[0, j] > 0.999


def test_add_list_and_reopen(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    report = mem.add("bruno", [photo(0), photo(1)], boxes=[Box(20, 16, 60, 48), Box(10, 10, 50, 40)], context="dog")
    assert [v.how for v in report.views] == ["box", "box"] and report.vectors == 2
    mem.add("mug", [photo(2)], boxes=[Box(0, 0, 40, 30)])
    mem.close()
    again = open_memory(tmp_path / "mem", encoder=ENCODER)
    assert again.names() == ["bruno", "mug"]
    info = again.get("bruno")
    assert (info.views, info.vectors, info.context) == (2, 2, "dog")
    assert again.encoder_name == "mobilenetv2-random" and again.dim == 96
    assert finds_itself(again, "bruno") and finds_itself(again, "mug")


def test_view_embeddings_are_the_stored_vectors_of_one_concept(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    mem.add("bruno", [photo(0), photo(1)], boxes=[Box(20, 16, 60, 48), Box(10, 10, 50, 40)])
    mem.add("mug", [photo(2)], boxes=[Box(0, 0, 40, 30)])
    emb, tag = mem.view_embeddings("bruno")
    assert emb.shape == (2, 96) and tag == "mobilenetv2-random"
    view = mem.views("mug")[0]
    again = mem.encoder.encode(view.image).pool_boxes(view.box.to_array()[None])[0]
    assert float(mem.view_embeddings("mug")[0][0] @ again) > 0.999
    with pytest.raises(MemoryStoreError, match="no concept 'cat'"):
        mem.view_embeddings("cat")


def test_views_are_downscaled_with_their_boxes_and_keep_thumbnails(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem", MemoryConfig(view_max_side=48, augment=AugmentConfig(False, [])))
    mem.add("wide", [photo(3, (192, 128))], boxes=[Box(40, 32, 120, 96)])
    (view,) = mem.views("wide")
    assert view.image.size == (48, 32)
    assert view.box.as_list() == [10.0, 8.0, 30.0, 24.0]
    assert max(view.thumbnail.size) <= 160 and view.how == "box"


def test_augmented_views_add_vectors(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem", MemoryConfig(augment=AugmentConfig(hflip=True, zoom_out=[2.0, 3.0])))
    report = mem.add("x", [photo(4)], boxes=[Box(20, 16, 60, 48)])
    assert report.vectors == 4 and mem.get("x").vectors == 4


def test_rotated_views_are_stored_as_localize_makes_them(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem", MemoryConfig(augment=AugmentConfig(hflip=False, zoom_out=[], rotate=[90, 180])))
    report = mem.add("coin", [photo(4)], boxes=[Box(20, 16, 60, 48)])
    assert report.vectors == 3 and mem.get("coin").vectors == 3  # as given, turned 90 and 180 degrees
    with pytest.raises(ConfigError, match="rotate angles must be 90"):
        AugmentConfig(rotate=[45])


def test_views_without_box_are_auto_boxed_and_reported(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    report = mem.add("auto", [photo(5), photo(6)], boxes=[Box(20, 16, 60, 48), None])
    given, auto = report.views
    assert given.how == "box" and auto.how == "auto"
    assert auto.box is not None and 0.0 <= (auto.score or 0) <= 1.0
    auto.box.validate((96, 64))


def test_masks_give_the_view_box(tmp_path: Path) -> None:
    mask = np.zeros((64, 96), dtype=bool)
    mask[10:30, 40:70] = True
    mem = new_memory(tmp_path / "mem")
    report = mem.add("masked", [photo(7)], masks=[mask])
    assert report.views[0].how == "mask"
    assert report.views[0].box.as_list() == [40.0, 10.0, 70.0, 30.0]
    (view,) = mem.views("masked")
    assert view.mask is not None and view.mask.sum() == mask.sum()


def test_duplicate_refused_unless_replace_which_keeps_the_color(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    mem.add("a", [photo(0)], boxes=[Box(0, 0, 30, 30)])
    mem.add("b", [photo(1)], boxes=[Box(0, 0, 30, 30)])
    color = mem.color("b")
    with pytest.raises(MemoryStoreError, match="already exists"):
        mem.add("b", [photo(2)], boxes=[Box(0, 0, 30, 30)])
    report = mem.add("b", [photo(2), photo(3)], boxes=[Box(0, 0, 30, 30)] * 2, replace=True)
    assert report.replaced and mem.get("b").views == 2 and mem.color("b") == color
    assert mem.color("a") != mem.color("b")
    assert len(mem._index) == 3  # the replaced view's vector left the index


def test_rename_remove_and_context(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    for name in ("a", "b"):
        mem.add(name, [photo(hash(name) % 100)], boxes=[Box(0, 0, 30, 30)])
    mem.rename("a", "alpha")
    mem.set_context("alpha", "the first one")
    assert mem.names() == ["alpha", "b"] and mem.context("alpha") == "the first one"
    assert finds_itself(mem, "alpha")
    with pytest.raises(MemoryStoreError, match="already exists"):
        mem.rename("alpha", "b")
    mem.remove("b")
    assert mem.names() == ["alpha"] and len(mem._index) == 1
    with pytest.raises(MemoryStoreError, match=r"no concept 'b'.*'alpha'"):
        mem.remove("b")


@pytest.mark.parametrize("bad", ["a/b", "..", "tab\there", "x" * 201, "  "])
def test_python_api_applies_the_cli_name_rule(tmp_path: Path, bad: str) -> None:
    """A concept added from Python must be addressable later by the CLI and in a URL: same rule, nothing stored."""
    mem = new_memory(tmp_path / "mem")
    mem.add("ok", [photo(0)], boxes=[Box(0, 0, 30, 30)])
    with pytest.raises(MemoryStoreError):
        mem.add(bad, [photo(1)], boxes=[Box(0, 0, 30, 30)])
    with pytest.raises(MemoryStoreError):
        mem.rename("ok", bad)
    assert mem.names() == ["ok"]


def test_other_process_changes_are_seen(tmp_path: Path) -> None:
    reader = new_memory(tmp_path / "mem")
    writer = new_memory(tmp_path / "mem")
    writer.add("late", [photo(9)], boxes=[Box(0, 0, 30, 30)])
    assert finds_itself(reader, "late")
    writer.remove("late")
    assert reader.match(np.ones((1, 96), dtype=np.float32)).names == []


def test_encoder_mismatch_refused_then_reembed(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    mem.add("a", [photo(0), photo(1)], boxes=[Box(0, 0, 30, 30)] * 2)
    other = new_memory(tmp_path / "mem", encoder=OTHER_ENCODER)
    with pytest.raises(MemoryStoreError, match="mixing encoders is refused"):
        other.add("b", [photo(2)], boxes=[Box(0, 0, 30, 30)])
    assert other.re_embed(OTHER_ENCODER, progress=False) == 2
    reopened = open_memory(tmp_path / "mem", encoder=OTHER_ENCODER)
    assert reopened.encoder_name == "mobilenetv2-s32-random" and reopened.dim == 1280
    assert finds_itself(reopened, "a")
    other.add("b", [photo(2)], boxes=[Box(0, 0, 30, 30)])
    assert reopened.names() == ["a", "b"]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, p: m.add("x", []), MemoryStoreError, "no reference images"),
        (lambda m, p: m.add("  ", [photo(0)]), MemoryStoreError, "non-empty"),
        (lambda m, p: m.add("x", [photo(0)], boxes=[None, None]), MemoryStoreError, "1 images and 2 boxes"),
        (lambda m, p: m.add("x", [photo(0)], boxes=[Box(0, 0, 500, 30)]), BoxError, "outside the 96x64 image"),
        (lambda m, p: m.add("x", [photo(0)], masks=[np.zeros((64, 96), bool)]), ImageError, "empty"),
        (lambda m, p: m.add("x", [photo(0)], masks=[np.ones((5, 5), bool)]), ImageError, "5x5"),
        (lambda m, p: m.add("x", [p / "missing.jpg"]), MemoryStoreError, "no usable view.*not found"),
        (lambda m, p: m.remove("nothing"), MemoryStoreError, "no concept 'nothing'"),
    ],
)
def test_bad_input(tmp_path: Path, call, error: type[Exception], message: str) -> None:
    mem = new_memory(tmp_path / "mem")
    with pytest.raises(error, match=message):
        call(mem, tmp_path)
    assert mem.names() == []


def test_an_unreadable_photo_is_skipped_and_reported(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    mem = new_memory(tmp_path / "mem")
    report = mem.add("x", [photo(0), bad], boxes=[Box(0, 0, 30, 30), None])
    assert [v.how for v in report.views] == ["box", "skipped"] and "cannot decode" in report.views[1].reason
    assert mem.get("x").views == 1


def test_refuses_newer_format_foreign_directory_and_corrupt_database(tmp_path: Path) -> None:
    newer = tmp_path / "newer"
    new_memory(newer).close()
    (newer / "FORMAT").write_text('{"format": "focuskit-concept-memory", "version": 99}')
    with pytest.raises(MemoryStoreError, match=r"newer than the version 1.*upgrade focuskit"):
        ConceptMemory(newer)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"x")
    with pytest.raises(MemoryStoreError, match="not a focuskit concept memory"):
        ConceptMemory(foreign)
    broken = tmp_path / "broken"
    new_memory(broken).close()
    (broken / "memory.sqlite").write_bytes(b"garbage" * 100)
    for suffix in ("-wal", "-shm"):
        (broken / f"memory.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(MemoryStoreError, match="corrupt"):
        ConceptMemory(broken)
    with pytest.raises(MemoryStoreError, match="no concept memory"):
        open_memory(tmp_path / "nowhere")


def test_corrupt_or_stale_index_is_rebuilt_from_the_database(tmp_path: Path) -> None:
    mem = new_memory(tmp_path / "mem")
    mem.add("a", [photo(0)], boxes=[Box(0, 0, 30, 30)])
    mem.add("b", [photo(1)], boxes=[Box(0, 0, 30, 30)])
    mem.close()
    (tmp_path / "mem" / INDEX_FILE).write_bytes(b"PK\x03\x04 truncated")
    again = open_memory(tmp_path / "mem", encoder=ENCODER)
    assert finds_itself(again, "a") and finds_itself(again, "b")
    index, meta = FaissIndex.load(tmp_path / "mem" / INDEX_FILE)  # rewritten, valid and current
    assert len(index) == 2 and meta["generation"] == again.generation()
    again.verify()


# --- crashes and concurrency (real child processes) -------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import torch
    from PIL import Image
    from focuskit.core.box import Box
    from focuskit.memory.index import FaissIndex
    from focuskit.memory.store import AugmentConfig, ConceptMemory, EncoderSpec, MemoryConfig

    mode, directory, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = EncoderSpec("mobilenetv2", {"pretrained": False, "input_size": 64}).create()
    mem = ConceptMemory(directory, encoder=enc, config=MemoryConfig(augment=AugmentConfig(hflip=True, zoom_out=[])))
    rng = np.random.default_rng(seed)
    photos = lambda k: [Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)) for _ in range(k)]
    boxes = [Box(8, 8, 60, 50)] * 3
    if mode == "die-in-transaction":
        insert = ConceptMemory._insert_view
        def slow_insert(self, cur, concept_id, position, prepared):
            insert(self, cur, concept_id, position, prepared)
            if position == 1:
                print("inserting", flush=True)
                time.sleep(120)
        ConceptMemory._insert_view = slow_insert
        mem.add("doomed", photos(3), boxes=boxes)
    elif mode == "die-before-index-write":
        def hang(self, path, meta=None):
            print("saving", flush=True)
            time.sleep(120)
        FaissIndex.save = hang
        mem.add("committed", photos(3), boxes=boxes)
    else:
        for i in range(int(sys.argv[4])):
            mem.add(f"{mode}{i}", photos(3), boxes=boxes)
            print(f"added {mode}{i}", flush=True)
    """
)


def spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # One torch thread: on a busy 2-core machine, OpenMP barriers between two threads cost a scheduler slice each.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def kill_when(proc: subprocess.Popen[str], marker: str, extra_delay: float = 0.0, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child exited before {marker!r}: {proc.stderr.read() if proc.stderr else ''}")
        if line.strip() == marker:
            time.sleep(extra_delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return
    proc.kill()
    pytest.fail(f"child never printed {marker!r}")


def assert_consistent(path: Path, expected: list[str]) -> None:
    mem = new_memory(path, MemoryConfig(augment=AugmentConfig(hflip=True, zoom_out=[])))
    assert mem.names() == expected
    for name in expected:
        info = mem.get(name)
        assert (info.views, info.vectors) == (3, 6) or name == "keep", f"{name} is half-added: {info}"
        assert finds_itself(mem, name)
    mem.verify()
    mem.add("after-crash", [photo(11)], boxes=[Box(0, 0, 30, 30)])  # still writable: no stale lock
    mem.close()


def seeded_memory(path: Path) -> None:
    with new_memory(path, MemoryConfig(augment=AugmentConfig(hflip=True, zoom_out=[]))) as mem:
        mem.add("keep", [photo(0)], boxes=[Box(0, 0, 30, 30)])


def test_killed_inside_the_transaction_leaves_the_previous_state(tmp_path: Path) -> None:
    seeded_memory(tmp_path / "mem")
    kill_when(spawn(tmp_path, "die-in-transaction", str(tmp_path / "mem"), "1"), "inserting")
    assert_consistent(tmp_path / "mem", ["keep"])


def test_killed_after_commit_before_the_index_write_keeps_the_concept(tmp_path: Path) -> None:
    seeded_memory(tmp_path / "mem")
    kill_when(spawn(tmp_path, "die-before-index-write", str(tmp_path / "mem"), "2"), "saving")
    assert_consistent(tmp_path / "mem", ["keep", "committed"])


def test_killed_at_a_random_moment_of_a_series_of_adds(tmp_path: Path) -> None:
    seeded_memory(tmp_path / "mem")
    proc = spawn(tmp_path, "c", str(tmp_path / "mem"), "3", "50")
    kill_when(proc, "added c1", extra_delay=float(np.random.default_rng().uniform(0.0, 0.4)))
    names = open_memory(tmp_path / "mem").names()
    added = [n for n in names if n != "keep"]
    assert added == [f"c{i}" for i in range(len(added))] and len(added) >= 2
    assert_consistent(tmp_path / "mem", names)


def test_concurrent_writers_are_serialized(tmp_path: Path) -> None:
    seeded_memory(tmp_path / "mem")
    procs = [spawn(tmp_path, prefix, str(tmp_path / "mem"), str(seed), "2") for prefix, seed in (("a", 4), ("b", 5))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    names = open_memory(tmp_path / "mem").names()
    assert sorted(names) == ["a0", "a1", "b0", "b1", "keep"]
    assert_consistent(tmp_path / "mem", names)


def test_sqlite_file_is_a_real_transactional_database(tmp_path: Path) -> None:
    """Guard for the design: the generation counter moves exactly once per committed change."""
    mem = new_memory(tmp_path / "mem")
    g0 = mem.generation()
    mem.add("a", [photo(0)], boxes=[Box(0, 0, 30, 30)])
    mem.rename("a", "b")
    with pytest.raises(MemoryStoreError):
        mem.rename("nope", "c")
    assert mem.generation() == g0 + 2
    with sqlite3.connect(tmp_path / "mem" / "memory.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
