"""The encoder on ONNX (cv2.dnn) vs torch, side by side: features, region embeddings, detections, encode time.

1. Every photo in focuskit/assets/realphotos through both runtimes of the default encoder (MobileNetV2 s16 + 3x3
   parts): the largest feature difference relative to the map's largest value, and over the photo's proposals the
   largest region-embedding difference and the smallest cosine between the two runtimes' embeddings.
2. `ConceptDetector` on the 31 built-in real-photo episodes: each memory is made with torch (as `concept add` does)
   and its query detected with the torch encoder and with the ONNX one: the largest box-corner and score
   differences, and how many presence decisions differ.
3. Encode time of one 640x480 photo (median of 7, after one warm-up), per runtime, in this process.

    python benchmarks/encoder_onnx.py     # writes benchmarks/results/encoder_onnx.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from focuskit.core.io import atomic_write_json
from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.realphotos import realphotos_episodes
from focuskit.matcher import RegionMatcher
from focuskit.memory.store import ConceptMemory, open_memory
from focuskit.models.encoders import create_encoder, use_encoder_backend
from focuskit.personalize.detector import ConceptDetector

HERE = Path(__file__).resolve().parent.parent
REAL = HERE / "focuskit" / "assets" / "realphotos"
RESULTS = HERE / "benchmarks" / "results" / "encoder_onnx.json"


def features_and_regions() -> dict[str, float]:
    with use_encoder_backend("torch"):
        ref = create_encoder("mobilenetv2", layer="s16", parts=3)
    with use_encoder_backend("onnx"):
        onnx = create_encoder("mobilenetv2", layer="s16", parts=3)
    assert ref.name == onnx.name, (ref.name, onnx.name)
    proposer = RegionMatcher()
    feat_rel, emb_abs, min_cos, regions = 0.0, 0.0, 1.0, 0
    photos = sorted(REAL.glob("*.jpg"))
    for path in photos:
        image = Image.open(path).convert("RGB")
        a, b = ref.encode(image), onnx.encode(image)
        feat_rel = max(feat_rel, float(np.abs(a.array - b.array).max() / np.abs(a.array).max()))
        boxes = proposer.propose(image)
        ea, eb = a.pool_boxes(boxes), b.pool_boxes(boxes)
        emb_abs = max(emb_abs, float(np.abs(ea - eb).max()))
        min_cos = min(min_cos, float(np.sum(ea * eb, 1).min()))
        regions += len(boxes)
    return {
        "photos": len(photos), "regions": regions, "tag": ref.name, "feature_max_rel_diff": feat_rel,
        "embedding_max_abs_diff": emb_abs, "embedding_min_cosine": min_cos,
    }  # fmt: skip


def detections() -> dict[str, float]:
    episodes = load_episodes(realphotos_episodes())
    box_diff, score_diff, decisions, found = 0.0, 0.0, 0, 0
    with tempfile.TemporaryDirectory(prefix="focuskit-onnx-") as tmp:
        for i, ep in enumerate(episodes):
            folder = Path(tmp) / f"m{i}"
            with use_encoder_backend("torch"), ConceptMemory(folder) as mem:
                mem.add("x", [s.image for s in ep.supports], boxes=[s.box for s in ep.supports])
                want = ConceptDetector(mem).detect(ep.query_image)
            with use_encoder_backend("onnx"), open_memory(folder) as mem:
                got = ConceptDetector(mem).detect(ep.query_image)
            decisions += int(len(want) != len(got))
            found += len(want)
            if len(want) and len(got):
                box_diff = max(box_diff, float(np.abs(want.xyxy[0] - got.xyxy[0]).max()))
                score_diff = max(score_diff, abs(float(want.scores[0]) - float(got.scores[0])))
            score_diff = max(score_diff, abs(want.best_scores["x"] - got.best_scores["x"]))
    return {
        "episodes": len(episodes), "detections_torch": found, "presence_decisions_differing": decisions,
        "box_max_abs_diff_px": box_diff, "score_max_abs_diff": score_diff,
    }  # fmt: skip


def encode_ms() -> dict[str, float]:
    image = Image.open(REAL / "cup_f0035.jpg").convert("RGB")
    out = {}
    for backend in ("torch", "onnx"):
        with use_encoder_backend(backend):  # type: ignore[arg-type]
            encoder = create_encoder("mobilenetv2", layer="s16", parts=3)
        encoder.encode(image)
        times = []
        for _ in range(7):
            start = time.perf_counter()
            encoder.encode(image)
            times.append(time.perf_counter() - start)
        out[backend] = round(1000 * statistics.median(times), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    record = {"features": features_and_regions(), "detect": detections(), "encode_ms_640x480": encode_ms()}
    atomic_write_json(opts.out, record)
    for section, values in record.items():
        print(section, values)
    print(f"written {opts.out}")


if __name__ == "__main__":
    main()
