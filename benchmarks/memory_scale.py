"""Concept-memory vector index at 1k / 100k / 1M views: query latency, recall against exact search, disk and RAM.

Method
------
* Vectors are random unit vectors of the default PeKit encoder's dimension (MobileNetV2 s16+s32: 1376), generated
  in seeded batches of 10,000 and added batch by batch to one `FaissIndex`, as a memory growing view by view would.
* Two implementations, each scale in its own child process (so peak RSS is that configuration's own):
  - `previous`: the index as it was before issue 11: `IVF1024,SQ8` past 50k vectors, no reduction, no re-ranking;
  - `compressed` (the default `IndexConfig`): `PCA256,IVF1024,PQ64` past 50k vectors, the best 64 candidates of
    each query re-scored with the exact float32 vectors, fetched by id from a real concept-memory SQLite database
    (`MemoryDatabase.vectors`, the same code path `ConceptMemory.match` uses) that the benchmark fills alongside.
* Queries are 200 stored vectors plus noise (cosine ~0.96 to their source). Recall@1 is measured against exact
  search: the share of queries whose first result is the exact inner-product nearest neighbour over all vectors
  (computed by a second pass over the regenerated batches).
* Latency: a batch of 100 queries, top-64 (what the detector sends: one per proposal, `ConceptMemory.match`'s
  default top-k), 10 batches drawn from the 200 queries; median (p50) and max reported. A single query too.
* Disk is the saved index file (`index.zip`); the SQLite database holding the vectors (the memory's source of truth,
  present in both implementations) is reported separately.

    nice -n 10 .venv/bin/python benchmarks/memory_scale.py                       # 1k, 100k, 1M; ~10 min on 2 cores
    nice -n 10 .venv/bin/python benchmarks/memory_scale.py --scales 100000 --previous 100000 --no-store
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.io import atomic_write_json
from focuskit.search.config import IndexConfig
from focuskit.search.index import FaissIndex

RESULTS = Path(__file__).parent / "results" / "memory_scale.json"
BATCH = 10_000
QUERIES = 200
TOP_K = 64
CONFIGS = {
    "previous": IndexConfig(quantizer="SQ8", reduce_dim=0, rerank=0),
    "compressed": IndexConfig(),
}


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def batches(n: int, dim: int, seed: int):
    for b, start in enumerate(range(0, n, BATCH)):
        yield start, random_unit(np.random.default_rng([seed, b]), min(BATCH, n - start), dim)


def vector_database(directory: Path, dim: int):
    """A real concept-memory database whose `vectors` table the benchmark fills directly (no views needed)."""
    from focuskit.memory.database import MemoryDatabase

    db = MemoryDatabase(directory, lock_timeout=60.0, create=True)
    raw = sqlite3.connect(directory / "memory.sqlite", isolation_level=None)
    raw.execute("PRAGMA synchronous=OFF")  # bulk load; foreign keys are off on a plain connection
    raw.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
    return db, raw


def measure_scale(name: str, n: int, dim: int, seed: int = 0) -> dict[str, Any]:
    config = CONFIGS[name]
    rng = np.random.default_rng(seed)
    probe_ids = np.sort(rng.choice(n, size=min(QUERIES, n), replace=False))
    tmp = Path(tempfile.mkdtemp(prefix="memscale-"))
    db = raw = None
    if config.rerank:
        db, raw = vector_database(tmp / "memory", dim)
    source = None if db is None else (lambda ids: db.vectors(ids, dim))
    index = FaissIndex(dim, config, source=source)
    probes: list[np.ndarray] = []
    add_seconds = db_seconds = 0.0
    for start, vecs in batches(n, dim, seed):
        ids = np.arange(start, start + len(vecs), dtype=np.int64)
        inside = probe_ids[(probe_ids >= start) & (probe_ids < start + len(vecs))]
        probes.extend(vecs[inside - start])
        if raw is not None:
            t = time.perf_counter()
            raw.execute("BEGIN")
            raw.executemany(
                "INSERT INTO vectors(id, view_id, concept_id, variant, embedding) VALUES (?, 0, 0, 'original', ?)",
                [(int(i) + 1, v.tobytes()) for i, v in zip(ids, vecs, strict=True)],
            )
            raw.execute("COMMIT")
            db_seconds += time.perf_counter() - t
        t = time.perf_counter()
        index.add(vecs, ids + 1)  # SQLite ids start at 1
        add_seconds += time.perf_counter() - t
    sources = np.stack(probes)
    noise = np.random.default_rng(seed + 1).standard_normal(sources.shape, dtype=np.float32) * (0.3 / np.sqrt(dim))
    queries = sources + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    exact_ids = np.zeros(len(queries), dtype=np.int64)
    for start, vecs in batches(n, dim, seed):  # exact nearest neighbours, second pass
        sims = queries @ vecs.T
        arg = sims.argmax(1)
        better = sims[np.arange(len(queries)), arg] > best
        best[better] = sims[np.arange(len(queries)), arg][better]
        exact_ids[better] = start + arg[better] + 1

    single = []
    for q in queries[:50]:
        t = time.perf_counter()
        index.search(q[None], TOP_K)
        single.append(time.perf_counter() - t)
    _, found = index.search(queries, TOP_K)
    recall = float((found[:, 0] == exact_ids).mean())
    batch = []
    pick = np.random.default_rng(seed + 2)
    for _ in range(10):
        sample = queries[pick.choice(len(queries), 100, replace=False)]
        t = time.perf_counter()
        index.search(sample, TOP_K)
        batch.append(time.perf_counter() - t)

    breakdown = None
    if index.approximate:
        # Where a 100-query batch spends its time (same batches): scanning the compressed codes, fetching the exact
        # vectors of the candidates from the store, and the whole search at other nprobe settings.
        import faiss

        ivf = faiss.extract_index_ivf(index._index)
        samples = [queries[pick.choice(len(queries), 100, replace=False)] for _ in range(5)]
        scan, fetch = [], []
        for sample in samples:
            t = time.perf_counter()
            _, cand = index._index.search(np.ascontiguousarray(sample), max(TOP_K, config.rerank))
            scan.append(time.perf_counter() - t)
            if source is not None:
                t = time.perf_counter()
                source(np.unique(cand[cand >= 0]))
                fetch.append(time.perf_counter() - t)
        by_nprobe = {}
        for nprobe in (8, 16, 32):
            ivf.nprobe = nprobe
            _, found_n = index.search(queries, TOP_K)
            times = []
            for sample in samples:
                t = time.perf_counter()
                index.search(sample, TOP_K)
                times.append(time.perf_counter() - t)
            by_nprobe[nprobe] = {
                "recall_at_1_vs_exact": round(float((found_n[:, 0] == exact_ids).mean()), 4),
                "query_batch100_top64_ms_p50": round(1000 * statistics.median(times), 3),
            }
        index._set_nprobe()
        breakdown = {
            "scan_codes_batch100_ms_p50": round(1000 * statistics.median(scan), 3),
            "fetch_exact_batch100_ms_p50": round(1000 * statistics.median(fetch), 3) if fetch else None,
            "by_nprobe": by_nprobe,
        }

    path = tmp / "index.zip"
    t = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - t
    size = path.stat().st_size
    t = time.perf_counter()
    FaissIndex.load(path, config, source=source)
    load_s = time.perf_counter() - t
    db_mb = None
    if raw is not None:
        raw.close()
        db_mb = round(sum(p.stat().st_size for p in (tmp / "memory").glob("memory.sqlite*")) / 2**20, 1)
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()
    return {
        "implementation": name,
        "views": n,
        "dim": dim,
        "approximate": index.approximate,
        "add_seconds": round(add_seconds, 3),
        "add_views_per_s": round(n / add_seconds, 1),
        "database_insert_seconds": None if raw is None else round(db_seconds, 3),
        "query_top64_ms_median": round(1000 * statistics.median(single), 3),
        "query_batch100_top64_ms_p50": round(1000 * statistics.median(batch), 3),
        "query_batch100_top64_ms_max": round(1000 * max(batch), 3),
        "recall_at_1_vs_exact": round(recall, 4),
        "index_file_mb": round(size / 2**20, 1),
        "vector_database_mb": db_mb,
        "save_s": round(save_s, 3),
        "load_s": round(load_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "faiss_threads": int(__import__("faiss").omp_get_max_threads()),
        "breakdown": breakdown,
    }


def measure_store(views: int = 5) -> dict[str, Any]:
    """Wall time of `ConceptMemory.add` per real view with the default encoder and augmentations."""
    from focuskit.core.box import Box
    from focuskit.memory.store import ConceptMemory
    from focuskit.personalize.samples import sample_photos

    photos = list(sample_photos().values())[:views]
    with tempfile.TemporaryDirectory() as tmp:
        mem = ConceptMemory(Path(tmp) / "memory")
        mem.encoder.encode(photos[0])  # load weights outside the timing
        times = []
        for i, img in enumerate(photos):
            w, h = img.size
            t = time.perf_counter()
            mem.add(f"c{i}", [img], boxes=[Box(w * 0.2, h * 0.2, w * 0.8, h * 0.8)])
            times.append(time.perf_counter() - t)
        vectors = mem.get("c0").vectors
        mem.close()
    return {
        "views": views,
        "vectors_per_view": vectors,
        "add_seconds_per_view_median": round(statistics.median(times), 3),
        "add_views_per_s": round(1 / statistics.median(times), 2),
    }


def run_child(name: str, n: int, dim: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", name, str(n), "--dim", str(dim)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} at {n}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--previous", type=int, nargs="*", default=[100_000], help="scales for the previous index")
    parser.add_argument("--dim", type=int, default=1376, help="vector dimension (default: PeKit's encoder, 1376)")
    parser.add_argument("--no-store", action="store_true", help="skip the ConceptMemory.add measurement")
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_scale(args.one[0], int(args.one[1]), args.dim)))
        return

    rows = []
    cols = ("impl", 10), ("views", 9), ("1 q ms", 7), ("100q p50", 9), ("100q max", 9), ("R@1", 6), ("file MB", 8)
    print(" ".join(f"{name:>{width}}" for name, width in cols), f"{'RSS MB':>8}", flush=True)
    jobs = [("previous", n) for n in args.previous] + [("compressed", n) for n in args.scales]
    for name, n in sorted(jobs, key=lambda j: (j[1], j[0] != "previous")):
        r = run_child(name, n, args.dim)
        rows.append(r)
        print(
            f"{name:>10} {n:>9,} {r['query_top64_ms_median']:>7.2f} {r['query_batch100_top64_ms_p50']:>9.1f} "
            f"{r['query_batch100_top64_ms_max']:>9.1f} {r['recall_at_1_vs_exact']:>6.3f} {r['index_file_mb']:>8.1f} "
            f"{r['peak_rss_mb']:>8.0f}",
            flush=True,
        )
    store = None
    if not args.no_store:
        store = measure_store()
        print(
            f"ConceptMemory.add with the default encoder: {store['add_seconds_per_view_median']:.2f} s per view "
            f"({store['vectors_per_view']} vectors each: original, mirrored, zoomed out)"
        )
    configs = {name: asdict(cfg) for name, cfg in CONFIGS.items()}
    load = os.getloadavg()
    atomic_write_json(args.out, {"index": rows, "store_add": store, "configs": configs, "loadavg": load})
    print(f"results: {args.out} (load average during the run: {load[0]:.1f})")


if __name__ == "__main__":
    main()
