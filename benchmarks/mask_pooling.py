"""Box vs mask pooling, and crop re-embedding vs pooling from the full map, on the built-in real-photo episodes.

Every variant uses the same encoder (MobileNetV2 s16, the default of the matching engine), the same candidate boxes
and the same scoring, and differs only in how a region becomes an embedding:

* reference side: the supports' boxes pooled from their image's map (`box`), GrabCut masks of those boxes pooled
  (`mask`), or each support re-embedded from a crop around its box resized to the encoder's working size (`crop`,
  pooled inside the box there), or crop only for regions covering fewer than 16 cells of the full map (`auto`);
* "box then mask re-rank": candidates found and ranked with the box prototype, the best 8 re-scored as GrabCut
  masks against the mask prototype (the mask only judges, the box finds);
* query side: candidates are tiled windows plus windows of the supports' sizes around the 5 peaks of the
  prototype's similarity map; each is scored by the cosine of its box-pooled embedding with the prototype (the mean
  of the reference embeddings). Then the 8 best candidates are re-scored the variant's way (`box`: unchanged;
  `mask`: GrabCut mask of the candidate pooled; `crop`: the candidate re-embedded from its crop; `auto`: crop if small).

Measured per variant:
* recognition: the episode score (best candidate) for the present-target queries vs the absent-target queries of
  the set: AUROC, the mean gap, and the margin (lowest present - highest absent);
* localization on present queries: mean IoU of the best candidate with the true box, and the share at IoU >= 0.5;
  also on the "small" subset (true box under 64 cells of the stride-16 map, i.e. under ~1/40 of a 448 px image).

Small objects: with `--grid DIR` every present query is shrunk into one tile of a 3x3 grid of photos from other
sources (its absent twin has another photo in that tile), so the object covers 1/9 of its area, and the window
sizes around the similarity peaks are scaled down by the same factor for every variant.

    python benchmarks/mask_pooling.py     # prints a table, writes benchmarks/results/mask_pooling.json
    python benchmarks/mask_pooling.py --grid /tmp/grid --out benchmarks/results/mask_pooling_small.json
"""

from __future__ import annotations

import argparse
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from focuskit.core.box import box_iou_batch
from focuskit.core.image import load_image
from focuskit.core.io import atomic_write_json
from focuskit.core.masks import masks_to_boxes
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.models.encoders import create_encoder, l2_normalize
from focuskit.models.proposals.windows import WindowProposer, boxes_around_points
from focuskit.models.regions import embed_regions, region_cells
from focuskit.models.segmenters import create_segmenter

RESULTS = Path(__file__).parent / "results" / "mask_pooling.json"
TOP_K = 8
VARIANTS = [  # (name, reference side, query re-scoring, answer box from the winner's GrabCut mask)
    ("box / box", "box", "box", False),
    ("mask / box", "mask", "box", False),
    ("mask / mask", "mask", "mask", False),
    ("box / mask", "box", "mask", False),
    ("box / box, box from mask", "box", "box", True),
    ("mask / mask, box from mask", "mask", "mask", True),
    ("box then mask re-rank", "box+mask", "mask", False),
    ("crop / box", "crop", "box", False),
    ("crop / crop", "crop", "crop", False),
    ("auto / auto", "auto", "auto", False),
]


def family(path: str) -> str:
    """Which source an image comes from; the box video and the packet photos are treated as one (same packet?)."""
    name = Path(path).name
    for prefix, fam in (("box_f", "box"), ("box_", "box"), ("cup_f", "cup"), ("chess_", "chess"), ("moto_", "moto"),
                        ("bikes_", "bikes")):  # fmt: skip
        if name.startswith(prefix):
            return fam
    return Path(path).stem


def auroc(pos: list[float], neg: list[float]) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


class Bench:
    def __init__(self, scales: tuple[float, ...] = (0.6, 0.8, 1.0, 1.25)) -> None:
        self.scales = scales
        self.encoder = create_encoder("mobilenetv2")
        self.segmenter = create_segmenter("grabcut")
        self.windows = WindowProposer()

    @cache  # noqa: B019 - one benchmark object per run
    def image(self, path: str) -> Image.Image:
        return load_image(path)

    @cache  # noqa: B019
    def fmap(self, path: str) -> Any:
        return self.encoder.encode(self.image(path))

    def masks(self, path: str, boxes: np.ndarray) -> np.ndarray:
        img = self.image(path)
        return np.stack([self.segmenter.mask_for_box(img, b) for b in boxes])

    def embed(self, path: str, boxes: np.ndarray, how: str) -> np.ndarray:
        img, fmap = self.image(path), self.fmap(path)
        if how == "box":
            return fmap.pool_boxes(boxes)
        if how == "mask":
            return fmap.pool_masks(self.masks(path, boxes))
        return embed_regions(self.encoder, img, boxes, fmap=fmap, mode="crop" if how == "crop" else "auto")

    def candidates(self, path: str, proto: np.ndarray, support_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img, fmap = self.image(path), self.fmap(path)
        sim = fmap.similarity(proto)
        gh, gw = sim.shape
        flat = np.argsort(-sim.ravel())[:5]
        pts = np.stack([(flat % gw + 0.5) * img.width / gw, (flat // gw + 0.5) * img.height / gh], 1)
        around = boxes_around_points(pts, support_sizes, img.size, scales=self.scales, aspect_ratios=(0.7, 1, 1.4))
        boxes = np.concatenate([self.windows.propose(img), around])
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 4) & (boxes[:, 3] - boxes[:, 1] >= 4)]
        return boxes, fmap.pool_boxes(boxes) @ proto


def answer(
    bench: Bench,
    q: str,
    proto: np.ndarray,
    sizes: np.ndarray,
    query_how: str,
    refine: bool,
    rescore_proto: np.ndarray | None = None,
):
    """The best candidate box in query image `q` and its score, re-scored the variant's way.

    Candidates are found and ranked with `proto`; the top ones are re-scored against `rescore_proto` (default
    `proto`), so a box prototype can find candidates and a mask prototype judge them.
    """
    boxes, scores = bench.candidates(q, proto, sizes)
    top = np.argsort(-scores)[:TOP_K]
    if query_how != "box":
        scores = scores.copy()
        scores[top] = bench.embed(q, boxes[top], query_how) @ (proto if rescore_proto is None else rescore_proto)
    best = int(top[np.argmax(scores[top])])
    box = boxes[best]
    if refine:
        box = masks_to_boxes(bench.masks(q, box[None]))[0]
    return box, float(scores[best])


def run(bench: Bench, episodes: list[Any], cross: bool, only: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    queries = sorted({str(e.query_image) for e in episodes})
    for name, ref_how, query_how, refine in VARIANTS:
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        rows, cross_neg = [], []
        for ep in episodes:
            by_image: dict[str, list[int]] = {}
            for i, s in enumerate(ep.supports):
                by_image.setdefault(str(s.image), []).append(i)
            protos = []
            for how in ref_how.split("+"):
                emb = np.zeros((ep.k, bench.encoder.dim), dtype=np.float32)
                for path, idx in by_image.items():
                    emb[idx] = bench.embed(path, np.array([ep.supports[i].box.to_xyxy() for i in idx]), how)
                protos.append(l2_normalize(emb.mean(0)))
            proto, rescore = protos[0], protos[-1]
            q = str(ep.query_image)
            sizes = np.array([[s.box.width, s.box.height] for s in ep.supports])
            box, score = answer(bench, q, proto, sizes, query_how, refine, rescore)
            truth = ep.query_box
            rows.append(
                {
                    "id": ep.id,
                    "present": truth is not None,
                    "score": score,
                    "iou": None if truth is None else float(box_iou_batch(box[None], [truth])[0, 0]),
                    "small": truth is not None
                    and bool(region_cells(bench.fmap(q), np.array([truth.to_xyxy()]))[0] < 64),
                }
            )
            if cross and truth is not None and not refine:
                # Cross-concept negatives: this concept's prototype on query photos from other sources.
                own = {family(str(s.image)) for s in ep.supports} | {family(q)}
                for other in queries:
                    if family(other) not in own:
                        cross_neg.append(answer(bench, other, proto, sizes, query_how, False, rescore)[1])
        pos = [r["score"] for r in rows if r["present"]]
        neg = [r["score"] for r in rows if not r["present"]]
        ious = [r["iou"] for r in rows if r["present"]]
        small = [r["iou"] for r in rows if r["present"] and r["small"]]
        rec = {
            "auroc": round(auroc(pos, neg), 4) if pos and neg else None,
            "mean_gap": round(float(np.mean(pos) - np.mean(neg)), 4) if pos and neg else None,
            "margin": round(float(min(pos) - max(neg)), 4) if pos and neg else None,
            "present": len(pos),
            "absent": len(neg),
        }
        if cross_neg:
            all_neg = neg + cross_neg
            rec["with_cross_negatives"] = {
                "negatives": len(all_neg),
                "auroc": round(auroc(pos, all_neg), 4),
                "mean_gap": round(float(np.mean(pos) - np.mean(all_neg)), 4),
                "present_above_every_negative": round(float(np.mean([p > max(all_neg) for p in pos])), 4),
            }
        out[name] = {
            "recognition": rec,
            "localization": {
                "miou": round(float(np.mean(ious)), 4),
                "acc_at_50": round(float(np.mean([v >= 0.5 for v in ious])), 4),
                "small_miou": round(float(np.mean(small)), 4) if small else None,
                "small_n": len(small),
            },
            "seconds": round(time.perf_counter() - t0, 1),
            "episodes": rows,
        }
        r, loc = out[name]["recognition"], out[name]["localization"]
        x = r.get("with_cross_negatives")
        xs = f" | +cross ({x['negatives']} neg) AUROC {x['auroc']} gap {x['mean_gap']}" if x else ""
        print(
            f"{name:27s} AUROC {r['auroc']} gap {r['mean_gap']} margin {r['margin']}{xs} | "
            f"mIoU {loc['miou']:.3f} acc@.5 {loc['acc_at_50']:.2f} small mIoU {loc['small_miou']} (n={loc['small_n']})"
            f" | {out[name]['seconds']:.0f}s",
            flush=True,
        )
    return out


def grid_episodes(episodes: list[Any], folder: Path) -> list[Any]:
    """Small-object episodes: each present query shrunk into one tile of a 3x3 grid of other sources' photos.

    The object then covers 1/9 of its former area (as if three times farther away), on real photos around it; the
    same grid with that tile replaced by one more other-source photo is the matching absent query.
    """
    from dataclasses import replace

    from focuskit.core.box import Box

    folder.mkdir(parents=True, exist_ok=True)
    queries = sorted({str(e.query_image) for e in episodes})
    out = []
    for n, ep in enumerate(e for e in episodes if e.query_box is not None):
        own = {family(str(s.image)) for s in ep.supports} | {family(str(ep.query_image))}
        others = [q for q in queries if family(q) not in own]
        q = load_image(ep.query_image)
        tw, th = q.width // 3, q.height // 3
        slot = n % 9
        fillers = [others[(n + j) % len(others)] for j in range(9)]
        for present in (True, False):
            canvas = Image.new("RGB", (3 * tw, 3 * th))
            for j in range(9):
                src = q if (present and j == slot) else load_image(fillers[j])
                canvas.paste(src.resize((tw, th), Image.Resampling.BILINEAR), ((j % 3) * tw, (j // 3) * th))
            path = folder / f"{ep.id}-{'present' if present else 'absent'}.jpg"
            canvas.save(path, quality=92)
            box = None
            if present:
                sx, sy = tw / q.width, th / q.height
                ox, oy = (slot % 3) * tw, (slot // 3) * th
                b = ep.query_box
                box = Box(ox + b.x1 * sx, oy + b.y1 * sy, ox + b.x2 * sx, oy + b.y2 * sy)
            out.append(replace(ep, id=f"{ep.id}-grid-{'present' if present else 'absent'}", query_image=path,
                               query_box=box))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N episodes (a quick check)")
    ap.add_argument("--no-cross", action="store_true", help="skip the cross-concept negatives (faster)")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run (default: all)")
    ap.add_argument("--grid", type=Path, default=None, help="run the small-object (3x3 grid) episodes, written here")
    args = ap.parse_args()
    episodes = load_episodes(realphotos_episodes())
    if args.limit:  # a quick check: some present and some absent episodes
        episodes = [e for e in episodes if e.query_box is not None][: args.limit] + [
            e for e in episodes if e.query_box is None
        ][: args.limit]
    print(f"{len(episodes)} episodes ({sum(e.query_box is None for e in episodes)} absent), top-{TOP_K} re-scored")
    only = set(args.only.split(",")) if args.only else None
    bench = Bench()
    if args.grid is not None:
        episodes = grid_episodes(episodes, args.grid)
        bench = Bench(scales=(0.25, 0.33, 0.45, 0.6))  # the objects are a third of the supports' size now
        print(f"grid: {len(episodes)} small-object episodes in {args.grid}")
    variants = run(bench, episodes, not args.no_cross and args.grid is None, only)
    results = {"encoder": "mobilenetv2 s16", "segmenter": "grabcut (defaults)", "top_k": TOP_K, "variants": variants}
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
