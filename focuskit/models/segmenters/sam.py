"""Segment Anything (SAM) through transformers: box-prompted masks, and whole-image masks from a point grid.

No SAM weights install offline here, so this loader is for users who have a checkpoint (a local directory or a hub
id such as "facebook/sam-vit-base", loaded with `from_pretrained`); tests build tiny models from a `SamConfig` with
random weights (`model_config=`, with a `processor=` sized to it). As SAM's own predictor does, the image
embedding is computed once per image and reused for every prompt on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from focuskit.core.box import Box
from focuskit.core.errors import ConfigError, ModelError
from focuskit.core.image import load_image
from focuskit.core.masks import mask_nms
from focuskit.models.segmenters.base import box_array

DEFAULT_MODEL = "facebook/sam-vit-base"


def load_pretrained(cls: Any, name: str, what: str) -> Any:
    """`cls.from_pretrained(name)` with the errors of a missing folder or an unreachable hub as `ModelError`."""
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelError(f"{what} checkpoint directory not found: {name} (expected a folder with config.json)")
    try:
        return cls.from_pretrained(str(Path(name).expanduser()) if looks_local else name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot load {what} checkpoint {name!r}: {first}. Pass a local directory with config.json and "
            "weights, or a hub id with network access"
        ) from None


class SamSegmenter:
    """SAM with box prompts (`mask_for_box`, `masks_for_boxes`) and a `points_per_side` grid (`masks`).

    With several candidate masks per prompt (`multimask=True`), the one with the best predicted IoU is kept.
    `masks(image)` keeps grid masks whose predicted IoU is at least `min_predicted_iou`, then suppresses duplicates
    (mask IoU above `nms_iou`); with `proposer=` it segments the proposer's boxes instead (GroundedSAM).
    """

    name = "sam"

    def __init__(
        self,
        *,
        model: str | None = None,
        model_config: Any | None = None,
        processor: Any | None = None,
        multimask: bool = True,
        points_per_side: int = 8,
        min_predicted_iou: float = 0.7,
        nms_iou: float = 0.7,
        proposer: Any | None = None,
    ) -> None:
        import transformers

        if model_config is not None:
            if model is not None:
                raise ConfigError("sam: give model= (a checkpoint) or model_config= (random weights), not both")
            if processor is None:
                raise ConfigError("sam: model_config= needs a processor= sized to it (SamProcessor)")
            self.model = transformers.SamModel(model_config)
        else:
            name = model or DEFAULT_MODEL
            self.model = load_pretrained(transformers.SamModel, name, "sam")
            processor = processor or load_pretrained(transformers.SamProcessor, name, "sam processor")
        if points_per_side < 1:
            raise ConfigError(f"sam points_per_side must be >= 1, got {points_per_side}")
        self.model.eval()
        self.processor = processor
        self.multimask = multimask
        self.points_per_side = points_per_side
        self.min_predicted_iou = min_predicted_iou
        self.nms_iou = nms_iou
        self.proposer = proposer
        self._cache: tuple[Any, dict[str, Any], torch.Tensor] | None = None

    def _embed(self, img: Image.Image) -> tuple[dict[str, Any], torch.Tensor]:
        """Processor inputs and the image embedding of `img`, computed once per image (keyed by its pixels)."""
        key = (img.size, hashlib.blake2b(img.tobytes(), digest_size=16).digest())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        inputs = self.processor(images=img, return_tensors="pt")
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"])
        self._cache = (key, inputs, embeddings)
        return inputs, embeddings

    def _decode(self, img: Image.Image, **prompts: Any) -> tuple[np.ndarray, np.ndarray]:
        """Masks (P, H, W) and predicted IoUs (P,) for P prompts of one kind (input_boxes or input_points)."""
        base, embeddings = self._embed(img)
        encoded = self.processor(images=img, return_tensors="pt", **prompts)
        args = {k: encoded[k] for k in ("input_boxes", "input_points", "input_labels") if k in encoded}
        with torch.inference_mode():
            out = self.model(image_embeddings=embeddings, multimask_output=self.multimask, **args)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks, base["original_sizes"], base["reshaped_input_sizes"]
        )[0]  # (P, M, H, W) bool
        scores = out.iou_scores[0].to(torch.float32)  # (P, M)
        best = scores.argmax(-1)
        rows = torch.arange(len(best))
        return masks[rows, best].numpy().astype(bool), scores[rows, best].numpy().astype(np.float64)

    def masks_for_boxes(self, image: Image.Image, boxes: np.ndarray) -> np.ndarray:
        img = load_image(image)
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            return np.zeros((0, img.height, img.width), dtype=bool)
        clipped = [box_array(row, img.size).tolist() for row in b]
        masks, _ = self._decode(img, input_boxes=[clipped])
        return masks

    def mask_for_box(self, image: Image.Image, box: Box | Any) -> np.ndarray:
        img = load_image(image)
        return self.masks_for_boxes(img, box_array(box, img.size)[None])[0]

    def masks(self, image: Image.Image) -> np.ndarray:
        img = load_image(image)
        if self.proposer is not None:
            boxes = np.asarray(self.proposer.propose(img), dtype=np.float64).reshape(-1, 4)
            masks = self.masks_for_boxes(img, boxes)
            scores = -np.arange(len(masks), dtype=np.float64)  # the proposer's order
        else:
            n = self.points_per_side
            xs = (np.arange(n) + 0.5) * img.width / n
            ys = (np.arange(n) + 0.5) * img.height / n
            points = [[[float(x), float(y)]] for y in ys for x in xs]
            masks, scores = self._decode(img, input_points=[points], input_labels=[[[1]] * len(points)])
            keep = (scores >= self.min_predicted_iou) & masks.reshape(len(masks), -1).any(1)
            masks, scores = masks[keep], scores[keep]
        if len(masks) == 0:
            return np.zeros((0, img.height, img.width), dtype=bool)
        nonempty = masks.reshape(len(masks), -1).any(1)
        masks, scores = masks[nonempty], scores[nonempty]
        return masks[mask_nms(masks, scores, self.nms_iou)]
