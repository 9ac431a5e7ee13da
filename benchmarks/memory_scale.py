"""Concept-memory vector index at 1k / 100k / 1M views: add throughput, top-k query latency, recall, disk and RAM.

Method
------
* Vectors are random unit vectors of the default PeKit encoder's dimension (MobileNetV2 s16+s32: 1376), added in
  batches of 10,000 to one `FaissIndex` with the default `IndexConfig` (exact `IndexFlatIP` up to 50,000 vectors,
  then `IVF1024,SQ8` trained on the vectors present at the switch, nprobe 32). Add throughput includes the switch
  (k-means training) when a scale crosses it.
* Queries are 200 stored vectors plus noise (cosine ~0.96 to their source), so each has one well-defined nearest
  neighbour; recall@1 is the share whose source comes back first. With random data every other vector is at cosine
  ~0 +- 0.03, the hardest case for inverted lists (no cluster structure to exploit).
* Latency is the median over the 200 queries of one `search` call: a single query (top-64), and a batch of 100
  queries (what the detector sends: one per proposal). Queries are timed after the adds, one scale at a time.
* Disk is the saved index file (zip with the serialized index); save/load are one atomic write and one read.
* Peak RSS of the process (`ru_maxrss`) is reported after each scale; scales run smallest first.
* Store-level add throughput: `ConceptMemory.add` of 5 real photos with the default encoder (encoding, mirrored and
  zoomed-out variants, SQLite commit, index write), i.e. what a user waits for per view.

    .venv/bin/python benchmarks/memory_scale.py                 # 1k, 100k, 1M; ~3 min on 2 cores
    .venv/bin/python benchmarks/memory_scale.py --scales 1000 100000 --no-store
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.io import atomic_write_json
from focuskit.memory.index import FaissIndex, IndexConfig

RESULTS = Path(__file__).parent / "results" / "memory_scale.json"
BATCH = 10_000
QUERIES = 200
TOP_K = 64


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def measure_scale(n: int, dim: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    index = FaissIndex(dim, IndexConfig())
    probe_ids = np.sort(rng.choice(n, size=min(QUERIES, n), replace=False))
    probes: list[np.ndarray] = []
    add_seconds = 0.0
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        vecs = random_unit(rng, count, dim)
        ids = np.arange(start, start + count, dtype=np.int64)
        inside = probe_ids[(probe_ids >= start) & (probe_ids < start + count)]
        probes.extend(vecs[inside - start])
        t = time.perf_counter()
        index.add(vecs, ids)
        add_seconds += time.perf_counter() - t
    sources = np.stack(probes)
    noise = rng.standard_normal(sources.shape, dtype=np.float32) * (0.3 / np.sqrt(dim))
    queries = sources + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    single = []
    hits = 0
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, found = index.search(q[None], TOP_K)
        single.append(time.perf_counter() - t)
        hits += int(found[0, 0] == probe_ids[i])
    batch = []
    for i in range(0, len(queries), 100):
        t = time.perf_counter()
        index.search(queries[i : i + 100], TOP_K)
        batch.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.zip"
        t = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        FaissIndex.load(path)
        load_s = time.perf_counter() - t
    return {
        "views": n,
        "dim": dim,
        "approximate": index.approximate,
        "add_seconds": round(add_seconds, 3),
        "add_views_per_s": round(n / add_seconds, 1),
        "query_top64_ms_median": round(1000 * statistics.median(single), 3),
        "query_batch100_top64_ms_median": round(1000 * statistics.median(batch), 3),
        "recall_at_1": round(hits / len(queries), 4),
        "index_file_mb": round(size / 2**20, 1),
        "save_s": round(save_s, 3),
        "load_s": round(load_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1376, help="vector dimension (default: PeKit's encoder, 1376)")
    parser.add_argument("--no-store", action="store_true", help="skip the ConceptMemory.add measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = []
    cols = ("views", 9), ("mode", 7), ("add/s", 10), ("1 query ms", 11), ("100 q ms", 9), ("R@1", 6), ("file MB", 8)
    print(" ".join(f"{name:>{width}}" for name, width in cols), f"{'RSS MB':>8}")
    for n in args.scales:
        r = measure_scale(n, args.dim)
        rows.append(r)
        mode = "IVF-SQ8" if r["approximate"] else "exact"
        print(
            f"{n:>9,} {mode:>7} {r['add_views_per_s']:>10,.0f} {r['query_top64_ms_median']:>11.2f} "
            f"{r['query_batch100_top64_ms_median']:>9.1f} {r['recall_at_1']:>6.3f} {r['index_file_mb']:>8.1f} "
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
    atomic_write_json(args.out, {"index": rows, "store_add": store, "config": IndexConfig().__dict__})
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
