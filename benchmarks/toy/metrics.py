"""Held-out evaluation of a toy checkpoint: mIoU per k, target-pick rate and box-area ratio.

mIoU alone cannot tell "found the target" from "drew a big box over both objects" (GRPO found exactly that in the
first toy), so every row also reports:

- `pick_rate`: answers whose centre is nearer the target's centre than every look-alike's (chance 1/objects);
- `area_ratio`: median answer area / target area;
- per-episode IoU (mean over k) so rows can be compared with paired differences.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focuskit.core.episode import Episode


def matching_stats(predictions: list[dict[str, Any]], episodes: Sequence[Episode]) -> dict[str, Any]:
    from focuskit.core.box import Box
    from focuskit.eval.metrics import episode_iou

    by_id = {ep.id: ep for ep in episodes}
    picks, ratios, anys = [], [], []
    for rec in predictions:
        ep = by_id[rec["id"]]
        if ep.query_box is None:
            continue
        if rec["box"] is None:
            picks.append(0.0)
            anys.append(0.0)
            continue
        pred = Box(*rec["box"])
        anys.append(
            max([episode_iou(pred, ep.query_box)] + [episode_iou(pred, Box(*b)) for b in ep.meta["query_distractors"]])
        )
        x1, y1, x2, y2 = rec["box"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        tx, ty = ep.query_box.center
        target = (cx - tx) ** 2 + (cy - ty) ** 2
        others = [((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in ep.meta["query_distractors"]]
        picks.append(float(all(target < o for o in others)))
        ratios.append(max(0.0, x2 - x1) * max(0.0, y2 - y1) / max(ep.query_box.area, 1e-9))
    return {
        "pick_rate": statistics.fmean(picks) if picks else math.nan,
        "picks": picks,
        "area_ratio": statistics.median(ratios) if ratios else math.nan,
        "iou_any": statistics.fmean(anys) if anys else math.nan,
    }


def evaluate_model(
    model_dir: Path | str, episodes: Sequence[Episode], shots: Sequence[int], *, batch_size: int = 16
) -> dict[str, Any]:
    """Greedy `VLMLocalizer` answers through `focuskit.eval.evaluate`; unparsed answers count as misses."""
    from focuskit.eval.runner import evaluate
    from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig

    localizer = VLMLocalizer.from_pretrained(model_dir, VLMLocalizerConfig(batch_size=batch_size, max_new_tokens=24))
    result = evaluate(localizer, list(episodes), list(shots), progress=False)
    row: dict[str, Any] = {
        "miou": {s.k: s.miou for s in result.summaries},
        "parsed": sum(r["box"] is not None for r in result.predictions) / max(1, len(result.predictions)),
    }
    for k in shots:
        preds = [r for r in result.predictions if r["k"] == k]
        stats = matching_stats(preds, episodes)
        row.setdefault("pick_rate", {})[k] = stats["pick_rate"]
        row.setdefault("area_ratio", {})[k] = stats["area_ratio"]
        row.setdefault("per_episode_iou", {})[k] = [float(r["iou"]) for r in preds]
        row.setdefault("per_episode_pick", {})[k] = stats["picks"]
    return row


def batched_answers(
    model_dir: Path | str, episodes: Sequence[Episode], *, batch_size: int = 32, max_new_tokens: int = 22
) -> list[dict[str, Any]]:
    """Greedy answers for many episodes with *different* supports, `batch_size` episodes per `generate` call.

    `VLMLocalizer.localize_episodes` decodes episode by episode (its batching shares one support prefix across many
    queries: the video case), about 1 s an episode on this CPU; held-out synthetic episodes share nothing, so this
    left-pads whole prompts into one batch instead: the same prompts (`build_prompt`), processor, greedy decoding
    and `parse_box` as the localizer's from-scratch path (`VLMLocalizer._generate`). Records match
    `focuskit.eval.evaluate`'s (`id`, `k`, `box`, `iou`).
    """
    import torch

    from focuskit.eval.metrics import episode_iou
    from focuskit.models.vlms.factory import load_vlm
    from focuskit.models.vlms.generation import stop_token_ids
    from focuskit.models.vlms.parsing import parse_box
    from focuskit.models.vlms.prompts import build_prompt, processor_image_kwargs

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the GPU preset; CPU runs stay float32
    bundle = load_vlm(model_dir, dtype="auto")
    model, processor, family = bundle.model.to(device), bundle.processor, bundle.family
    stops = sorted(stop_token_ids(processor.tokenizer, family))
    out: list[dict[str, Any]] = []
    for start in range(0, len(episodes), batch_size):
        chunk = episodes[start : start + batch_size]
        built = [build_prompt(processor, ep.supports, ep.query_image, bundle.prompt, family=family) for ep in chunk]
        enc = processor(
            text=[b.text for b in built], images=[b.images for b in built], return_tensors="pt", padding=True,
            padding_side="left", **processor_image_kwargs(family, bundle.prompt),
        ).to(device)  # fmt: skip
        with torch.inference_mode():
            seq = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=stops,
            )  # fmt: skip
        for ep, b, row in zip(chunk, built, seq[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
            end = next((i for i, t in enumerate(row) if t in stops), len(row))
            text = processor.tokenizer.decode(row[:end], skip_special_tokens=False).strip()
            parsed = parse_box(text, family, b.query_image_size, b.query_resized_size)
            box = parsed.box
            out.append(
                {"id": ep.id, "k": ep.k, "text": text, "box": None if box is None else box.as_list(),
                 "iou": float(episode_iou(box, ep.query_box))}
            )  # fmt: skip
    return out


def evaluate_fast(
    model_dir: Path | str, episodes: Sequence[Episode], shots: Sequence[int], *, batch_size: int = 32
) -> dict[str, Any]:
    """`evaluate_model`'s row from `batched_answers`: mIoU, pick rate and area ratio per k, per-episode values."""
    row: dict[str, Any] = {"miou": {}, "pick_rate": {}, "area_ratio": {}, "iou_any": {}, "per_episode_iou": {},
                           "per_episode_pick": {}}  # fmt: skip
    parsed = total = 0
    for k in shots:
        sub = [ep.with_shots(k) for ep in episodes if ep.k >= k]
        preds = batched_answers(model_dir, sub, batch_size=batch_size)
        stats = matching_stats(preds, sub)
        ious = [p["iou"] for p in preds]
        row["miou"][k] = statistics.fmean(ious)
        row["pick_rate"][k] = stats["pick_rate"]
        row["area_ratio"][k] = stats["area_ratio"]
        row["iou_any"][k] = stats["iou_any"]
        row["per_episode_iou"][k] = ious
        row["per_episode_pick"][k] = stats["picks"]
        parsed += sum(p["box"] is not None for p in preds)
        total += len(preds)
    row["parsed"] = parsed / max(1, total)
    return row


def attention_shares(model_dir: Path | str, episodes: Sequence[Episode], n: int) -> dict[str, float]:
    """Mean `focuskit explain` shares of the answer tokens' attention (query image, support images, support boxes,
    other) over the first `n` episodes at their full k, on the model's own greedy answers; eager attention."""
    from focuskit.analysis.attention import SEGMENTS, explain_episode
    from focuskit.models.vlms.factory import load_vlm

    bundle = load_vlm(model_dir, dtype="float32", attn_implementation="eager")
    reports = [explain_episode(bundle, ep, answer="generated", layers="all") for ep in list(episodes)[:n]]
    return {name: statistics.fmean(r.shares[name] for r in reports) for name in SEGMENTS} if reports else {}
