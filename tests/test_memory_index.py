"""FAISS vector index: exact and approximate search, ids, removal, persistence and corruption."""

from __future__ import annotations

import json
import zipfile
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import numpy as np
import pytest

from focuskit.core.errors import ConfigError, MemoryStoreError
from focuskit.memory.index import FaissIndex, IndexConfig, VectorIndex


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(x: np.ndarray, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    """Perturbed copies: each row's true nearest neighbour is the row it came from."""
    y = x + noise * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_is_a_vector_index() -> None:
    assert isinstance(FaissIndex(8), VectorIndex)


def test_exact_search_returns_ids_and_cosines() -> None:
    x = unit(300, 32)
    ids = np.arange(1000, 1300)
    index = FaissIndex(32)
    index.add(x, ids)
    scores, found = index.search(near(x[:50]), 3)
    assert not index.approximate
    assert (found[:, 0] == ids[:50]).all()
    expected = np.einsum("nd,nd->n", near(x[:50]), x[:50])
    np.testing.assert_allclose(scores[:, 0], expected, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_empty_index_and_short_results_pad_with_minus_one() -> None:
    index = FaissIndex(16)
    scores, ids = index.search(unit(2, 16), 4)
    assert (ids == -1).all() and np.isneginf(scores).all()
    index.add(unit(2, 16), np.array([7, 8]))
    scores, ids = index.search(unit(1, 16, seed=5), 4)
    assert sorted(ids[0, :2].tolist()) == [7, 8]
    assert (ids[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()


def test_remove_by_id() -> None:
    x = unit(100, 16)
    index = FaissIndex(16)
    index.add(x, np.arange(100))
    assert index.remove(np.array([3, 4, 999])) == 2
    assert len(index) == 98
    _, ids = index.search(x[3:5], 1)
    assert 3 not in ids and 4 not in ids


def test_switches_to_approximate_past_threshold_and_keeps_recall() -> None:
    cfg = IndexConfig(exact_max=400, nlist=16, nprobe=8)
    x = unit(1200, 32, seed=3)
    index = FaissIndex(32, cfg)
    index.add(x[:400], np.arange(400))
    assert not index.approximate
    index.add(x[400:], np.arange(400, 1200))
    assert index.approximate and len(index) == 1200
    assert sorted(index.ids().tolist()) == list(range(1200))
    _, ids = index.search(near(x, 0.02), 1)
    assert (ids[:, 0] == np.arange(1200)).mean() >= 0.95
    assert index.remove(np.arange(100)) == 100
    _, ids = index.search(x[:100], 5)
    assert not np.isin(ids, np.arange(100)).any()


@pytest.mark.parametrize("approximate", [False, True])
def test_save_load_round_trip(tmp_path: Path, approximate: bool) -> None:
    cfg = IndexConfig(exact_max=100 if approximate else 10_000, nlist=4, nprobe=4)
    x = unit(300, 16)
    index = FaissIndex(16, cfg)
    index.add(x, np.arange(300) * 2)
    path = tmp_path / "index.zip"
    index.save(path, {"generation": 7})
    loaded, meta = FaissIndex.load(path, cfg)
    assert meta == {"generation": 7}
    assert loaded.approximate == approximate and len(loaded) == 300
    np.testing.assert_array_equal(loaded.search(x[:20], 2)[1], index.search(x[:20], 2)[1])
    assert loaded.remove(np.array([0, 2])) == 2  # the loaded index is fully usable


def _rewrite(path: Path, header_update: dict | None = None, flip_byte: bool = False) -> None:
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
        blob = bytearray(zf.read("index.faiss"))
    header.update(header_update or {})
    if flip_byte:
        blob[len(blob) // 2] ^= 0xFF
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("header.json", json.dumps(header))
        zf.writestr("index.faiss", bytes(blob))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"not a zip"), "corrupt"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt"),
        (lambda p: _rewrite(p, flip_byte=True), "checksum"),
        (lambda p: _rewrite(p, {"version": 99}), "upgrade focuskit"),
        (lambda p: _rewrite(p, {"format": "something-else"}), "not a focuskit vector index"),
        (lambda p: p.unlink(), "not found"),
    ],
)
def test_damaged_index_files_are_refused(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "index.zip"
    index = FaissIndex(8)
    index.add(unit(20, 8), np.arange(20))
    index.save(path)
    damage(path)
    with pytest.raises(MemoryStoreError, match=message):
        FaissIndex.load(path)


@pytest.mark.parametrize(
    "vectors, expectation",
    [
        (unit(3, 8), does_not_raise()),
        (unit(3, 9), pytest.raises(MemoryStoreError, match=r"shape \(N, 8\)")),
        (np.full((2, 8), np.nan, dtype=np.float32), pytest.raises(MemoryStoreError, match="NaN")),
    ],
)
def test_vector_validation(vectors: np.ndarray, expectation) -> None:
    with expectation:
        FaissIndex(8).add(vectors, np.arange(len(vectors)))


def test_id_count_must_match() -> None:
    with pytest.raises(MemoryStoreError, match="one id per vector"):
        FaissIndex(8).add(unit(3, 8), np.arange(2))


@pytest.mark.parametrize(
    "kwargs",
    [{"exact_max": 0}, {"nlist": 0}, {"nprobe": 0}, {"quantizer": "LSH"}],
)
def test_bad_index_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        IndexConfig(**kwargs)


def test_compressed_regime_reranks_with_the_exact_vectors_of_its_source() -> None:
    x = unit(3000, 64, seed=4)
    calls = []

    def source(ids: np.ndarray) -> np.ndarray:
        calls.append(len(ids))
        return x[ids]

    cfg = IndexConfig(exact_max=1000, nlist=8, nprobe=8, reduce_dim=16, quantizer="PQ8", rerank=20)
    index = FaissIndex(64, cfg, source=source)
    index.add(x, np.arange(3000))
    assert index.approximate and index._own is None  # compressed: no float copy kept
    q = near(x[:50], 0.05)
    scores, ids = index.search(q, 3)
    assert calls and (ids[:, 0] == np.arange(50)).mean() >= 0.95
    exact = np.einsum("nd,nkd->nk", q, x[ids])
    np.testing.assert_allclose(scores, exact, atol=1e-5)  # exact cosines, not code estimates
    assert index.remove(np.arange(10)) == 10 and len(index) == 2990
    assert not np.isin(index.search(x[:10], 5)[1], np.arange(10)).any()


def test_compressed_index_without_source_keeps_its_own_copy_across_save_and_load(tmp_path: Path) -> None:
    x = unit(2500, 32, seed=6)
    cfg = IndexConfig(exact_max=1000, nlist=8, nprobe=8, reduce_dim=8, quantizer="PQ4")
    index = FaissIndex(32, cfg)
    index.add(x, np.arange(2500) + 7)
    index.save(tmp_path / "i.zip")
    loaded, _ = FaissIndex.load(tmp_path / "i.zip", cfg)
    for idx in (index, loaded):
        scores, ids = idx.search(x[:40], 1)
        assert (ids[:, 0] == np.arange(40) + 7).all()
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
