"""The library's vector index: exact while small, compressed past `exact_max`, in sync with the database after
incremental updates, deletions and crashes; batch files and ingest (the cluster path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focuskit.core.errors import MemoryStoreError
from focuskit.library import LibraryConfig, LibraryIndex
from focuskit.library.embedding import read_batch_file, write_batch_file
from focuskit.library.records import FileRecord, ItemRecord
from focuskit.library.vectors import INDEX_FILE
from focuskit.search.config import IndexConfig

DIM = 32
TAG = "toy-encoder"


class Views:
    """A concept memory stand-in: fixed view embeddings."""

    def __init__(self, views: np.ndarray, tag: str = TAG) -> None:
        self.views, self.tag = views, tag

    def view_embeddings(self, name: str) -> tuple[np.ndarray, str]:
        return self.views, self.tag


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _records(rng: np.random.Generator, names: list[str], root: str, per: int = 20) -> list[FileRecord]:
    out = []
    for name in names:
        emb = _unit(rng.standard_normal((per, DIM)))
        boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (per, 1)) + np.arange(per, dtype=np.float32)[:, None]
        out.append(FileRecord(root, name, "image", 1, 1, None, (ItemRecord(None, None, 100, 100, boxes, emb),)))
    return out


def _index(tmp_path: Path, exact_max: int = 10**6) -> LibraryIndex:
    cfg = LibraryConfig(index=IndexConfig(exact_max=exact_max, nlist=8, nprobe=8, reduce_dim=16, quantizer="SQ8"))
    index = LibraryIndex(tmp_path / "state", cfg)
    index.store.set_meta("encoder", TAG)
    return index


def _paths(hits: list) -> list[str]:
    return [h.path for h in hits]


@pytest.mark.parametrize("exact_max", [10**6, 500])
def test_index_search_matches_the_exact_scan(tmp_path: Path, exact_max: int) -> None:
    rng = np.random.default_rng(0)
    index = _index(tmp_path, exact_max)
    records = _records(rng, [f"p{i:03d}.jpg" for i in range(150)], str(tmp_path))  # 3,000 vectors
    target = records[17].items[0].embeddings[3].copy()
    for i in range(20, 32):  # look-alikes at growing distances in other photos: the ranking to reproduce
        records[i].items[0].embeddings[5] = _unit(target + 0.07 * (i - 19) * rng.standard_normal(DIM) / np.sqrt(DIM))
    for lo in range(0, 150, 50):
        index.store.write_batch(records[lo : lo + 50])
    index._save_vectors()
    views = Views(_unit(np.stack([target + 0.05 * rng.standard_normal(DIM), target])))
    hits = index.search("c", views, tau=0.3, top=10)
    exact = index.search("c", views, tau=0.3, top=10, exact=True)
    assert index.vectors.index is not None and index.vectors.index.approximate == (exact_max < 3000)
    assert hits[0].path == "p017.jpg" and hits[0].boxes[0].as_list() == [3.0, 3.0, 13.0, 13.0]
    assert set(_paths(hits[1:])) <= {f"p{i:03d}.jpg" for i in range(20, 32)}
    assert _paths(hits) == _paths(exact)
    # Re-ranked from the stored rows: the exact scan's cosines (which multiply in float16: < 1e-3 apart).
    assert np.allclose([h.score for h in hits], [h.score for h in exact], atol=1e-3)


def test_incremental_updates_deletions_and_a_crash_before_saving_keep_search_right(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    index = _index(tmp_path, exact_max=500)
    first = _records(rng, [f"a{i}.jpg" for i in range(40)], str(tmp_path))
    index.store.write_batch(first)
    index._save_vectors()
    saved_generation = index.store.versions()[0]

    # A later run commits a batch and deletes a file, then dies before saving the vector index.
    late = _records(rng, ["late.jpg"], str(tmp_path))
    index.store.write_batch(late)
    gone = index.store.files(str(tmp_path))[(str(tmp_path), "a5.jpg")].id
    index.store.remove_files([gone])
    assert index.store.versions()[0] > saved_generation

    fresh = LibraryIndex(tmp_path / "state", index.config)  # a new process: loads the stale file, reconciles
    late_view = Views(late[0].items[0].embeddings[:1])
    assert fresh.search("c", late_view, tau=0.99)[0].path == "late.jpg"
    a5_view = Views(first[5].items[0].embeddings[:1])
    assert "a5.jpg" not in _paths(fresh.search("c", a5_view, tau=0.99))
    assert sorted(fresh.vectors.index.ids()) == sorted(fresh.vectors.wanted_ids(fresh.vectors.locations()))


def test_a_corrupt_vector_index_file_is_rebuilt_from_the_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    index = _index(tmp_path)
    records = _records(rng, ["x.jpg", "y.jpg"], str(tmp_path))
    index.store.write_batch(records)
    index._save_vectors()
    (tmp_path / "state" / INDEX_FILE).write_bytes(b"not a zip")
    fresh = LibraryIndex(tmp_path / "state", index.config)
    assert fresh.search("c", Views(records[1].items[0].embeddings[:1]), tau=0.99)[0].path == "y.jpg"


def test_batch_files_round_trip_and_ingest_like_direct_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    records = _records(rng, ["b0.jpg", "b1.jpg", "b2.jpg"], str(tmp_path))
    records.append(FileRecord(str(tmp_path), "bad.jpg", "image", 1, 1, None, error="cannot decode"))
    write_batch_file(tmp_path / "part0.npz", records[:2], TAG)
    write_batch_file(tmp_path / "part1.npz", records[2:], TAG)
    back, tag = read_batch_file(tmp_path / "part1.npz")
    assert tag == TAG and [r.path for r in back] == ["b2.jpg", "bad.jpg"] and back[1].error == "cannot decode"
    assert np.allclose(back[0].items[0].embeddings, records[2].items[0].embeddings, atol=1e-3)

    ingested = LibraryIndex(tmp_path / "ingested", LibraryConfig())
    report = ingested.ingest([tmp_path / "part0.npz", tmp_path / "part1.npz"])
    assert (report.added, report.failed, report.items) == (3, [("bad.jpg", "cannot decode")], 3)
    views = Views(records[2].items[0].embeddings[4:5])
    assert ingested.search("c", views, tau=0.99)[0].path == "b2.jpg"
    assert (tmp_path / "ingested" / INDEX_FILE).is_file()

    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(MemoryStoreError, match="not a readable library batch file"):
        ingested.ingest([tmp_path / "junk.npz"])
    write_batch_file(tmp_path / "other.npz", records[:1], "another-encoder")
    with pytest.raises(MemoryStoreError, match="--reindex"):
        ingested.ingest([tmp_path / "other.npz"])
