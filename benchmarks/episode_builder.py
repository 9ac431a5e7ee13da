"""How long episode construction takes on a LaSOT-shaped tree, with and without reading frame headers.

Builds a synthetic LaSOT layout (tiny JPEG frames, some occluded / out-of-view) in a temporary folder, then times,
in one run and side by side: the index, building 1/2/4-shot episodes with `check_images` on and off, and writing the
JSONL files with and without `--max-side` downscaling. Prints the figures and writes
`benchmarks/results/episode_builder.json`.

    .venv/bin/python benchmarks/episode_builder.py [--sequences 24] [--frames 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from focuskit.core.io import atomic_write_json
from focuskit.data.episode_builder import EpisodeConfig, build_sequence_episodes
from focuskit.data.export import ImageShrinker, write_jsonl
from focuskit.data.lasot import LasotDataset

T = TypeVar("T")


def make_tree(root: Path, sequences: int, frames: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    for s in range(sequences):
        cls = f"class{s % 6}"
        seq = root / cls / f"{cls}-{s}"
        (seq / "img").mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(np.roll(base, i, axis=1)).save(seq / "img" / f"{i + 1:08d}.jpg", quality=80)
        hidden = set(rng.choice(frames, size=frames // 10, replace=False).tolist())
        rows = ["0,0,0,0" if i in hidden else f"{10 + i % 50},{12},{60},{40}" for i in range(frames)]
        (seq / "groundtruth.txt").write_text("\n".join(rows) + "\n")
        (seq / "full_occlusion.txt").write_text(",".join("1" if i in hidden else "0" for i in range(frames)) + "\n")
        (seq / "out_of_view.txt").write_text(",".join("0" for _ in range(frames)) + "\n")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=24)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    size = (320, 240)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "LaSOT"
        _, t_make = timed(lambda: make_tree(root, args.sequences, args.frames, size))
        ds, t_open = timed(lambda: LasotDataset(root))
        _, t_index = timed(ds.index)
        cfg_on = EpisodeConfig(shots=[1, 2, 4], negatives=10)
        cfg_off = EpisodeConfig(shots=[1, 2, 4], negatives=10, check_images=False)
        res_on, t_on = timed(lambda: build_sequence_episodes(LasotDataset(root), cfg_on, progress=False))
        res_off, t_off = timed(lambda: build_sequence_episodes(LasotDataset(root), cfg_off, progress=False))
        out = Path(tmp) / "out"
        _, t_write = timed(
            lambda: [write_jsonl(v, out / f"e.k{k}.jsonl", progress=False) for k, v in res_on.by_k.items()]
        )
        shrinker = ImageShrinker(160, out / "small_images")
        _, t_write_small = timed(
            lambda: [
                write_jsonl(v, out / f"s.k{k}.jsonl", shrinker=shrinker, progress=False) for k, v in res_on.by_k.items()
            ]
        )
    episodes = res_on.total()
    results = {
        "sequences": args.sequences,
        "frames_per_sequence": args.frames,
        "frame_size": list(size),
        "episodes_written": episodes,
        "seconds": {
            "make_fixture": round(t_make, 3),
            "open_and_scan": round(t_open, 4),
            "index": round(t_index, 4),
            "build_check_images_on": round(t_on, 4),
            "build_check_images_off": round(t_off, 4),
            "write_jsonl": round(t_write, 4),
            "write_jsonl_max_side_160": round(t_write_small, 4),
        },
        "ratio_check_on_over_off": round(t_on / t_off, 2),
        "ratio_downscaled_write_over_plain_write": round(t_write_small / t_write, 2),
        "same_episodes_with_and_without_checks": [e.id for v in res_on.by_k.values() for e in v]
        == [e.id for v in res_off.by_k.values() for e in v],
    }
    for key, value in results["seconds"].items():
        print(f"{key:28s} {value:8.3f} s")
    print(f"episodes: {episodes}; check_images on/off: {results['ratio_check_on_over_off']}x; "
          f"downscaled/plain write: {results['ratio_downscaled_write_over_plain_write']}x")  # fmt: skip
    out_path = Path(__file__).parent / "results" / "episode_builder.json"
    atomic_write_json(out_path, results)
    print(f"results: {out_path}")


if __name__ == "__main__":
    main()
