"""Oracle check: can the frozen CNN features the toy feeds its language model tell a target from its look-alike?

A training-free nearest-neighbour rule on exactly the features the model sees (the CNN map average-pooled onto the
merged token grid): pool the grid cells inside each support's target box (weighted by how much of each cell the box
covers), average over the k supports, and pick the query box (target or look-alike) whose pooled features have the
higher cosine with that prototype. If this rule is near chance, no training objective can make the toy learn the
skill: the data or the token grid is the bottleneck. If it is high, the bottleneck is learning.

    python -m benchmarks.toy.oracle --instances 200      # prints a table, writes benchmarks/results/toy_oracle.json

Variants vary what the features can see: grid (tokens per side), `cnn_scale` (upsampling before the stride-16 CNN),
and a "pixels" row (mean RGB inside the box: what a colour histogram would know), all on the same held-out pool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from focuskit.core.box import Box


def cell_weights(box: Box, grid: int, size: int) -> np.ndarray:
    """`(grid*grid,)` fraction of each cell (row-major) covered by `box` (pixels of a `size` px square image)."""
    edges = np.linspace(0, size, grid + 1)
    wx = np.clip(np.minimum(edges[1:], box.x2) - np.maximum(edges[:-1], box.x1), 0, None)
    wy = np.clip(np.minimum(edges[1:], box.y2) - np.maximum(edges[:-1], box.y1), 0, None)
    w = np.outer(wy, wx).ravel()
    return w / max(w.sum(), 1e-9)


class FeatureMaps:
    """Frozen MobileNetV2 s16 maps of images, pooled onto a `grid` x `grid` token grid (as `CNNVisionTower` does)."""

    def __init__(self, cnn_scale: float, grid: int) -> None:
        from focuskit.models.encoders.mobilenetv2 import IMAGENET_MEAN, IMAGENET_STD, _Trunk, build_mobilenetv2

        self.trunk = _Trunk(build_mobilenetv2(pretrained=True), "s16").eval()
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        self.cnn_scale, self.grid = cnn_scale, grid
        self._cache: dict[Path, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            from PIL import Image

            with Image.open(path) as im:
                x = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255).permute(2, 0, 1)
            x = ((x - self.mean) / self.std)[None]
            if self.cnn_scale != 1.0:
                x = F.interpolate(x, scale_factor=self.cnn_scale, mode="bilinear", align_corners=False)
            pooled = F.adaptive_avg_pool2d(self.trunk(x), self.grid)[0]
            self._cache[path] = pooled.flatten(1).T.numpy()  # (grid*grid, C)
        return self._cache[path]


def pixel_means(path: Path, box: Box) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), np.float32)
    x1, y1, x2, y2 = (round(v) for v in box.as_list())
    return a[y1:y2, x1:x2].reshape(-1, 3).mean(0)


def oracle_pick(episodes: list[Any], embed: Any, k: int) -> list[float]:
    """Per episode: 1 if the prototype of the first `k` supports is nearer (cosine) the target than the look-alike."""
    picks = []
    for ep in episodes:
        proto = np.mean([embed(s.image, s.box) for s in ep.supports[:k]], axis=0)
        cands = [embed(ep.query_image, ep.query_box)] + [
            embed(ep.query_image, Box(*b)) for b in ep.meta["query_distractors"]
        ]
        sims = [float(np.dot(proto, c) / (np.linalg.norm(proto) * np.linalg.norm(c) + 1e-9)) for c in cands]
        picks.append(float(sims[0] > max(sims[1:])))
    return picks


def run(
    instances: int,
    image_size: int,
    variants: list[tuple[str, float, int]],
    *,
    seed: int = 103,
    groups: tuple[str, ...] | None = None,
    min_scale: float = 0.25,
    max_scale: float = 0.45,
) -> dict[str, Any]:
    from benchmarks.toy.pool import render_pool, sample_episodes
    from focuskit.data.synth import SynthConfig

    rows = []
    with tempfile.TemporaryDirectory(prefix="toy_oracle_") as tmp:
        config = SynthConfig(objects=2, seed=seed, image_size=image_size, backgrounds=("gradient",),
                             min_scale=min_scale, max_scale=max_scale)  # fmt: skip
        pool = render_pool(config, Path(tmp), instances, 5, groups=groups)
        episodes = sample_episodes(pool, instances, shots=(4, 4), seed=3, distinct=True)
        for name, scale, grid in variants:
            if name == "pixels":
                embed = pixel_means
            else:
                maps = FeatureMaps(scale, grid)

                def embed(path: Path, box: Box, maps: FeatureMaps = maps) -> np.ndarray:
                    return cell_weights(box, maps.grid, image_size) @ maps(path)

            row: dict[str, Any] = {"name": name, "cnn_scale": scale, "grid": grid}
            for k in (1, 4):
                picks = oracle_pick(episodes, embed, k)
                p = statistics.fmean(picks)
                row[f"pick_k{k}"] = p
                row[f"se_k{k}"] = (p * (1 - p) / len(picks)) ** 0.5
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"instances": instances, "image_size": image_size, "groups": groups, "min_scale": min_scale,
            "max_scale": max_scale, "rows": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--groups", choices=("all", "visible"), default="all", help="look-alike attribute changes")
    parser.add_argument("--min-scale", type=float, default=0.25)
    parser.add_argument("--max-scale", type=float, default=0.45)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "results" / "toy_oracle.json")
    args = parser.parse_args()
    s = args.image_size
    variants = [("tokens", 1.0, s // 28), ("tokens", 2.0, s // 28), ("cnn_map", 1.0, s // 16),
                ("cnn_map", 2.0, s // 8), ("pixels", 0.0, 0)]  # fmt: skip
    from benchmarks.toy.pool import VISIBLE_GROUPS

    groups = VISIBLE_GROUPS if args.groups == "visible" else None
    result = run(args.instances, s, variants, groups=groups, min_scale=args.min_scale, max_scale=args.max_scale)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
