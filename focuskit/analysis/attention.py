"""Where a model looks while it answers: attention shares per prompt segment, and heatmaps over each image.

FOCUS (Fig. 2, Appendix D) explains in-context localization failures by the answer tokens' attention: a model that
localizes well puts much of it on the query image and on the support boxes, one that fails spreads it over the
support images. For one episode this module measures, over the rows that produce the answer tokens, averaged over
heads and the selected decoder layers, the share of attention on

    query_image      the query image's visual tokens
    support_images   the support images' visual tokens
    support_boxes    the support boxes' text tokens (mask M of the attention loss)
    other            everything else (instruction, chat markup, the answer written so far)

and, for each image, the attention on its visual tokens laid out on its token grid (Qwen families: `image_grid_thw`
divided by the merge size), upsampled bilinearly to the image and overlaid on it.

Attention weights need the eager attention implementation. Forward hooks on the decoder layers' attention modules
reduce each layer's (heads, L, L) map to the answer rows as soon as it is computed, so only one layer's map is
alive at a time rather than all of them (which `output_attentions=True` would keep).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.episode import Episode, open_image
from focuskit.core.errors import ConfigError, ModelError
from focuskit.core.io import atomic_write_bytes, atomic_write_json, figure_png
from focuskit.models.vlms.encoding import IGNORE_INDEX, encode_episode, image_token_runs
from focuskit.models.vlms.factory import VLMBundle
from focuskit.models.vlms.families import family_spec
from focuskit.models.vlms.generation import (
    GenerationSettings,
    base_model,
    build_generation_config,
    first_stop,
    generate,
    stop_token_ids,
    text_config,
)
from focuskit.models.vlms.parsing import parse_box

SEGMENTS: tuple[str, ...] = ("query_image", "support_images", "support_boxes", "other")
AnswerSource = Literal["generated", "target"]


@dataclass
class ImageAttention:
    """Attention on one image's visual tokens, averaged like the shares."""

    role: str
    """"support 1", "support 2", ..., "query"."""
    grid: np.ndarray | None
    """(rows, cols) attention per visual token on the merged token grid; None when the layout is unknown."""
    share: float
    """Sum of the grid: this image's part of the answer rows' attention."""


@dataclass
class AttentionReport:
    """The answer tokens' attention in one episode. Shares sum to 1 (per layer and overall)."""

    episode_id: str
    answer: str
    answer_source: AnswerSource
    answer_box: Box | None
    """The analysed answer parsed to pixels of the query image (None: not a box)."""
    shares: dict[str, float]
    shares_per_layer: list[dict[str, float]]
    layers: list[int]
    token_counts: dict[str, int]
    answer_rows: int
    images: list[ImageAttention] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "episode": self.episode_id,
            "answer": self.answer,
            "answer_source": self.answer_source,
            "answer_box": None if self.answer_box is None else self.answer_box.as_list(),
            "shares": {k: round(v, 6) for k, v in self.shares.items()},
            "layers": self.layers,
            "shares_per_layer": [{k: round(v, 6) for k, v in s.items()} for s in self.shares_per_layer],
            "token_counts": self.token_counts,
            "answer_rows": self.answer_rows,
            "images": [{"role": im.role, "share": round(im.share, 6)} for im in self.images],
        }


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """Decoder layers from "all", "first:K", "last:K" or a comma list "0,3,5"; a `ConfigError` names the depth.

    >>> parse_layers("last:2", 4)
    [2, 3]
    """
    text = spec.strip().lower()
    if text == "all":
        return list(range(num_layers))
    match = re.fullmatch(r"(first|last):(\d+)", text)
    if match:
        k = int(match.group(2))
        if not 1 <= k <= num_layers:
            raise ConfigError(f"layers {spec!r}: k must be in 1..{num_layers} (the model has {num_layers} layers)")
        return list(range(k)) if match.group(1) == "first" else list(range(num_layers - k, num_layers))
    try:
        layers = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"layers must be 'all', 'first:K', 'last:K' or indices like '0,1,2'; got {spec!r}") from None
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ConfigError(f"layers {spec!r}: indices must be in 0..{num_layers - 1} (the model has {num_layers})")
    return layers


def decoder_attention_modules(model: Any) -> list[torch.nn.Module]:
    """The language model's per-layer self-attention modules, in order (peft wrappers looked through)."""
    base = base_model(model)
    for path in ("model.language_model.layers", "language_model.layers", "model.layers"):
        node: Any = base
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                break
        if node is not None:
            return [layer.self_attn for layer in node]
    raise ModelError(f"cannot find the decoder layers of {type(base).__name__} to read their attention")


def _language_attn_impl(model: Any) -> str | None:
    return getattr(text_config(model), "_attn_implementation", None)


@torch.no_grad()
def _generate_answer(bundle: VLMBundle, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
    """Greedy answer token ids (without the end-of-turn token), as `VLMLocalizer` would produce them."""
    tok = bundle.processor.tokenizer
    config = build_generation_config(GenerationSettings(max_new_tokens=max_new_tokens), tok, bundle.family)
    out = generate(bundle.model, inputs, config)
    new = out[0, inputs["input_ids"].shape[1] :].cpu()
    return new[: first_stop(new.tolist(), stop_token_ids(tok, bundle.family))]


def explain_episode(
    bundle: VLMBundle,
    episode: Episode,
    *,
    answer: AnswerSource = "generated",
    layers: str = "all",
    max_new_tokens: int = 48,
) -> AttentionReport:
    """Measure the answer tokens' attention for `episode` (see module doc).

    `answer="generated"` analyses the model's own greedy answer; `"target"` teacher-forces the ground-truth answer
    (its box, or "not present"). The model must run eager attention (`load_vlm(..., attn_implementation="eager")`).
    """
    if answer not in ("generated", "target"):
        raise ConfigError(f"answer must be 'generated' or 'target', got {answer!r}")
    impl = _language_attn_impl(bundle.model)
    if impl not in (None, "eager"):
        raise ModelError(
            f"attention weights need the eager attention implementation, but the model runs {impl!r}; "
            "load it with attn_implementation='eager'"
        )
    model = bundle.model
    model.eval()
    device = next(model.parameters()).device
    processor = bundle.processor
    enc = encode_episode(
        processor, episode, with_answer=(answer == "target"), prompt=bundle.prompt, family=bundle.family
    )
    inputs = {k: v.to(device) for k, v in enc.inputs.items()}
    length = enc.length
    if answer == "target":
        if enc.labels is None:
            raise ModelError(f"episode {episode.id!r}: encoding with the answer produced no labels")
        labelled = torch.nonzero(enc.labels[0] != IGNORE_INDEX).flatten()
        prompt_len = int(labelled[0])
        answer_ids = enc.inputs["input_ids"][0, prompt_len:length]
        answer_text = enc.answer_text or ""
    else:
        prompt_len = length
        answer_ids = _generate_answer(bundle, inputs, max_new_tokens)
        answer_text = processor.tokenizer.decode(answer_ids.tolist(), skip_special_tokens=False)
        if len(answer_ids):
            extra = answer_ids.unsqueeze(0).to(device)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
            for key in ("mm_token_type_ids", "token_type_ids"):
                if key in inputs:
                    inputs[key] = torch.cat([inputs[key], torch.zeros_like(extra)], dim=1)
    total = int(inputs["input_ids"].shape[1])
    # Rows that produce the answer: the position before each answer token (at least the one after the prompt).
    rows = torch.arange(prompt_len - 1, prompt_len - 1 + max(len(answer_ids), 1))
    modules = decoder_attention_modules(model)
    selected = parse_layers(layers, len(modules))

    captured: dict[int, torch.Tensor] = {}

    def make_hook(index: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise ModelError(
                    "the attention modules returned no weights: load the model with attn_implementation='eager'"
                )
            captured[index] = weights[0, :, rows.to(weights.device), :].float().mean(dim=(0, 1)).cpu()

        return hook

    handles = [modules[i].register_forward_hook(make_hook(i)) for i in selected]
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()

    masks = _segment_masks(enc, total, processor, bundle.family)
    per_layer = []
    for i in selected:
        att = captured[i]
        per_layer.append({name: float(att[m].sum()) for name, m in masks.items()})
    shares = {name: float(np.mean([s[name] for s in per_layer])) for name in SEGMENTS}
    mean_att = torch.stack([captured[i] for i in selected]).mean(dim=0).numpy()
    images = _image_attention(enc, mean_att, processor, bundle.family)
    qsize, rsize = enc.query_image_size, enc.query_resized_size
    parsed = parse_box(answer_text, bundle.family, qsize, rsize)
    return AttentionReport(
        episode_id=episode.id,
        answer=answer_text,
        answer_source=answer,
        answer_box=parsed.box,
        shares=shares,
        shares_per_layer=per_layer,
        layers=selected,
        token_counts={name: int(m.sum()) for name, m in masks.items()},
        answer_rows=len(rows),
        images=images,
    )


def _segment_masks(enc: Any, total: int, processor: Any, family: str) -> dict[str, torch.Tensor]:
    """Boolean key masks of length `total` for each segment; they partition the sequence."""

    def pad(mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(total, dtype=torch.bool)
        out[: mask.shape[0]] = mask
        return out

    query = pad(enc.query_image_mask[0])
    boxes = pad(enc.box_token_mask[0])
    image_id = processor.tokenizer.convert_tokens_to_ids(family_spec(family).image_token)
    ids = enc.inputs["input_ids"][0]
    support = torch.zeros(total, dtype=torch.bool)
    for start, end in image_token_runs(ids, image_id)[:-1]:
        support[start:end] = True
    other = ~(query | boxes | support)
    return {"query_image": query, "support_images": support, "support_boxes": boxes, "other": other}


def _image_attention(enc: Any, attention: np.ndarray, processor: Any, family: str) -> list[ImageAttention]:
    image_id = processor.tokenizer.convert_tokens_to_ids(family_spec(family).image_token)
    runs = image_token_runs(enc.inputs["input_ids"][0], image_id)
    grids = enc.inputs.get("image_grid_thw")
    merge = int(getattr(getattr(processor, "image_processor", None), "merge_size", 2) or 2)
    out = []
    for i, (start, end) in enumerate(runs):
        role = "query" if i == len(runs) - 1 else f"support {i + 1}"
        values = attention[start:end]
        grid = None
        if grids is not None and family in ("qwen2_vl", "qwen2_5_vl") and i < len(grids):
            t, h, w = (int(v) for v in grids[i].tolist())
            shape = (t * h // merge, w // merge)
            if shape[0] * shape[1] == len(values):
                grid = values.reshape(shape)
        out.append(ImageAttention(role=role, grid=grid, share=float(values.sum())))
    return out


# --- rendering ---------------------------------------------------------------------------------------------------
def heatmap_overlay(image: Image.Image, grid: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """`grid` (rows, cols) upsampled bilinearly to the image, min-max scaled, colored and blended over `image`."""
    import matplotlib

    w, h = image.size
    t = torch.from_numpy(np.asarray(grid, dtype=np.float32))[None, None]
    up = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    norm = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    colored = matplotlib.colormaps[cmap](norm)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1 - alpha) * base + alpha * colored
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def shares_figure(report: AttentionReport) -> bytes:
    """PNG: the overall shares as bars, and the shares per layer as stacked bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"query_image": "#e6194b", "support_images": "#4363d8", "support_boxes": "#3cb44b", "other": "#a9a9a9"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    names = list(SEGMENTS)
    values = [report.shares[n] for n in names]
    ax1.bar(range(len(names)), values, color=[colors[n] for n in names])
    ax1.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax1.set_ylabel("share of answer attention")
    ax1.set_ylim(0, 1)
    for x, v in enumerate(values):
        ax1.text(x, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    bottom = np.zeros(len(report.layers))
    for n in names:
        layer_values = np.array([s[n] for s in report.shares_per_layer])
        ax2.bar(range(len(report.layers)), layer_values, bottom=bottom, color=colors[n], label=n)
        bottom += layer_values
    ax2.set_xticks(range(len(report.layers)), [str(i) for i in report.layers], fontsize=8)
    ax2.set_xlabel("decoder layer")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{report.episode_id}: answer {report.answer[:60]!r} ({report.answer_source})", fontsize=9)
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def write_report(report: AttentionReport, episode: Episode, out_dir: str | Path, *, min_side: int = 384) -> list[Path]:
    """Write `attention.json`, `shares.png` and one heatmap PNG per image into `out_dir`; return the paths.

    Heatmaps show the support boxes (green), the query's ground truth (green) and the analysed answer (red); images
    whose short side is below `min_side` pixels are enlarged for display.
    """
    from focuskit.viz.draw import draw_boxes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "attention.json", out / "shares.png"]
    atomic_write_json(written[0], report.to_json())
    atomic_write_bytes(written[1], shares_figure(report))
    sources = [(s.image, s.box) for s in episode.supports] + [(episode.query_image, episode.query_box)]
    green, red = (60, 180, 75), (230, 25, 75)
    for (image_ref, box), att in zip(sources, report.images, strict=False):
        if att.grid is None:
            continue
        image = open_image(image_ref)
        # Small images (the tiny model's 112 px frames) are enlarged so the heatmap and labels stay readable.
        scale = max(1.0, min_side / min(image.size))
        if scale > 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        overlay = heatmap_overlay(image, att.grid)
        boxes: list[Box] = [box.scale(scale)] if box is not None else []
        labels = ["support" if att.role != "query" else "truth"] * len(boxes)
        colors = [green] * len(boxes)
        if att.role == "query" and report.answer_box is not None:
            boxes.append(report.answer_box.scale(scale))
            labels.append("answer")
            colors.append(red)
        if boxes:
            overlay = draw_boxes(overlay, boxes, labels, colors)
        path = out / f"heatmap_{att.role.replace(' ', '')}.png"
        atomic_write_bytes(path, _png_bytes(overlay))
        written.append(path)
    return written


def summarize_shares(reports: Sequence[AttentionReport]) -> dict[str, float]:
    """Mean shares over several episodes (e.g. to compare models as the paper's Fig. 2 does)."""
    if not reports:
        return dict.fromkeys(SEGMENTS, 0.0)
    return {name: float(np.mean([r.shares[name] for r in reports])) for name in SEGMENTS}
