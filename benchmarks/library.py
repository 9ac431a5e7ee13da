"""Library index benchmark: indexing throughput and search latency at 1k and 10k photos, and search quality.

Photos are generated from the real photos that ship with focuskit (and scikit-image): random crops (50-100% of each
side), horizontal flips and rescales (longer side 256-512 px), saved as JPEG. Three parts, measured in one run:

1. quality: the real-photo set (`focuskit/assets/realphotos`, 39 photos) indexed with the default configuration;
   four concepts taught from one boxed photo each (box, cup, chessboard, motorcycle); per concept, how many of its
   other photos are found and how many photos of other things are wrongly found, at the default threshold;
2. default throughput: a sample indexed with the default configuration (SSD + windows proposals, the memory's
   default encoder at its default input size), so the cost per photo a user will see is on record;
3. scale: the 1k and 10k indexes, built incrementally (the 10k run adds 9k photos to the 1k index) with a cheaper
   profile so the run takes minutes, not an hour: encoder input 224 px and weights-free window proposals. Reported:
   photos/s, search latency (median and p90 of repeated searches), re-scan time with nothing changed, disk use.

Run: `.venv/bin/python benchmarks/library.py [--sizes 1000,10000] [--sample 100]`; writes
benchmarks/results/library.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from focuskit.core.box import Box
from focuskit.core.io import atomic_write_json
from focuskit.library import LibraryConfig, LibraryIndex
from focuskit.library.demo import ASSET_DIR
from focuskit.memory.store import ConceptMemory, EncoderSpec

CONCEPTS = {
    # name: (support photo, box checked by eye (the episode file's boxes), prefix of its other photos)
    "box": ("box_f0000.jpg", (296.0, 14.0, 597.0, 242.0), "box_f"),
    "cup": ("cup_f0010.jpg", (308.0, 122.0, 413.0, 381.0), "cup_f"),
    "chessboard": ("chess_left03.jpg", (122.3, 25.1, 640.0, 464.3), "chess_"),
    "motorcycle": ("moto_left.jpg", (79.5, 65.6, 592.5, 390.4), "moto_"),
}


def sources() -> list[Path]:
    out = sorted(ASSET_DIR.glob("*.jpg"))
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        out += [data / n for n in ("chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "motorcycle_left.png")]
    except ImportError:
        pass
    return [p for p in out if p.is_file()]


def generate(dest: Path, start: int, stop: int, seed: int = 0) -> None:
    """Photos number start..stop-1: random crop, flip and rescale of a real photo, as JPEG."""
    srcs = [Image.open(p).convert("RGB") for p in sources()]
    dest.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(start, stop), desc="generate", unit="photo"):
        rng = np.random.default_rng(seed * 1_000_003 + i)
        img = srcs[int(rng.integers(len(srcs)))]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        side = int(rng.integers(256, 513))
        scale = side / max(out.size)
        out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))), Image.BILINEAR)
        sub = dest / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        out.save(sub / f"photo_{i:05d}.jpg", quality=85)


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_search(index: LibraryIndex, memory: ConceptMemory, concept: str, repeats: int) -> dict[str, float]:
    index.search(concept, memory)  # warm the page cache
    times, hits = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        hits = len(index.search(concept, memory))
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "median_s": round(statistics.median(times), 4),
        "p90_s": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4),
        "hits": hits,
    }


def quality(work: Path) -> dict[str, object]:
    memory = ConceptMemory(work / "quality-memory")
    for name, (photo, box, _) in CONCEPTS.items():
        memory.add(name, [ASSET_DIR / photo], boxes=[Box(*box)])
    index = LibraryIndex(work / "quality-state", LibraryConfig(), encoder=memory.encoder)
    report = index.update(ASSET_DIR, progress=False)
    tau = index.config.tau
    out: dict[str, object] = {"photos": report.items, "tau": tau, "encoder": memory.encoder_name, "concepts": {}}
    found_total = positives_total = false_total = negatives_total = 0
    for name, (photo, _, prefix) in CONCEPTS.items():
        scores = {h.path: h.score for h in index.search(name, memory, tau=-1.0)}
        pos = [p for p in scores if p.startswith(prefix) and p != photo]
        neg = [p for p in scores if not p.startswith(prefix)]
        found = [p for p in pos if scores[p] >= tau]
        wrong = sorted((p for p in neg if scores[p] >= tau), key=lambda p: -scores[p])
        out["concepts"][name] = {  # type: ignore[index]
            "positives": len(pos),
            "found": len(found),
            "min_positive_score": round(min(scores[p] for p in pos), 3),
            "max_negative_score": round(max(scores[p] for p in neg), 3),
            "false_positives": [(p, round(scores[p], 3)) for p in wrong],
        }
        found_total += len(found)
        positives_total += len(pos)
        false_total += len(wrong)
        negatives_total += len(neg)
    out["recall"] = round(found_total / positives_total, 3)
    out["false_positive_rate"] = round(false_total / negatives_total, 4)
    out["sweep"] = sweep(index, memory)
    memory.close()
    return out


def sweep(index: LibraryIndex, memory: ConceptMemory) -> list[dict[str, float]]:
    """Recall and false-positive rate over all four concepts for a range of thresholds."""
    best: dict[str, dict[str, float]] = {
        n: {h.path: h.score for h in index.search(n, memory, tau=-1.0)} for n in CONCEPTS
    }
    rows = []
    for tau in np.arange(0.50, 0.801, 0.02):
        tp = fn = fp = tn = 0
        for name, (photo, _, prefix) in CONCEPTS.items():
            for path, score in best[name].items():
                if path == photo:
                    continue
                positive = path.startswith(prefix)
                tp += positive and score >= tau
                fn += positive and score < tau
                fp += (not positive) and score >= tau
                tn += (not positive) and score < tau
        rows.append({"tau": round(float(tau), 2), "recall": round(tp / (tp + fn), 3), "fpr": round(fp / (fp + tn), 4)})
    return rows


def default_throughput(work: Path, sample: int) -> dict[str, object]:
    photos = work / "sample"
    generate(photos, 0, sample, seed=7)
    memory = ConceptMemory(work / "sample-memory")
    index = LibraryIndex(work / "sample-state", LibraryConfig(), encoder=memory.encoder)
    report = index.update(photos, progress=True)
    memory.close()
    return {
        "photos": report.added,
        "seconds": round(report.seconds, 2),
        "photos_per_s": round(report.added / report.seconds, 2),
        "proposers": index.config.proposers,
        "encoder": index.encoder.name,
        "input_size": getattr(index.encoder, "input_size", None),
    }


def scale(work: Path, sizes: list[int], repeats: int) -> list[dict[str, object]]:
    spec = EncoderSpec("mobilenetv2", {"layer": "s16+s32", "input_size": 224})
    memory = ConceptMemory(work / "scale-memory", encoder=spec)
    photo, box, _ = CONCEPTS["box"]
    memory.add("box", [ASSET_DIR / photo], boxes=[Box(*box)])
    config = LibraryConfig(proposers=["windows"], max_proposals=48)
    index = LibraryIndex(work / "scale-state", config, encoder=memory.encoder)
    photos = work / "photos"
    rows = []
    have = 0
    for n in sorted(sizes):
        generate(photos, have, n)
        report = index.update(photos, progress=True)
        have = n
        rescan = index.update(photos, progress=False)
        status = index.status()
        row = {
            "photos": n,
            "added": report.added,
            "index_seconds": round(report.seconds, 2),
            "photos_per_s": round(report.added / report.seconds, 2),
            "rescan_unchanged_s": round(rescan.seconds, 3),
            "proposals": status["proposals"],
            "state_mb": round(disk_bytes(work / "scale-state") / 1e6, 1),
            "search": time_search(index, memory, "box", repeats),
        }
        print(json.dumps(row))
        rows.append(row)
    memory.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="library sizes for the scale part")
    parser.add_argument("--sample", type=int, default=100, help="photos indexed with the default configuration")
    parser.add_argument("--repeats", type=int, default=7, help="timed searches per size")
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated photos and indexes here")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "library.json")
    parser.add_argument("--parts", default="quality,default,scale", help="subset to run; others kept from --out")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    parts = {p.strip() for p in args.parts.split(",")}

    work = args.workdir or Path(tempfile.mkdtemp(prefix="focuskit-library-bench-"))
    result = json.loads(args.out.read_text()) if parts != {"quality", "default", "scale"} and args.out.is_file() else {}
    try:
        result["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
        if "quality" in parts:
            result["quality"] = quality(work)
            print("quality:", json.dumps(result["quality"]))
        if "default" in parts:
            result["default_throughput"] = default_throughput(work, args.sample)
            print("default throughput:", json.dumps(result["default_throughput"]))
        if "scale" in parts:
            result["scale"] = scale(work, sizes, args.repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    if "scale" in result:
        print(f"\n{'photos':>8} {'photos/s':>9} {'search med':>11} {'search p90':>11} {'rescan':>8} {'state MB':>9}")
        for r in result["scale"]:
            s = r["search"]
            print(
                f"{r['photos']:>8} {r['photos_per_s']:>9} {s['median_s']:>10}s {s['p90_s']:>10}s "
                f"{r['rescan_unchanged_s']:>7}s {r['state_mb']:>9}"
            )
    if "default_throughput" in result:
        d = result["default_throughput"]
        print(f"default configuration ({'+'.join(d['proposers'])}, {d['encoder']}): {d['photos_per_s']} photos/s")
    if "quality" in result:
        q = result["quality"]
        print(f"real photos at tau {q['tau']}: recall {q['recall']}, false positive rate {q['false_positive_rate']}")
    atomic_write_json(args.out, result)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
