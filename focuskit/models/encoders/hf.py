"""DINOv2 and CLIP vision towers through transformers, as patch-grid feature maps.

No such weights install offline here (see the README "Offline weights"), so these loaders are for users who have a
checkpoint: a local directory or a hub id, loaded with `from_pretrained`. Tests build tiny models from configs with
random weights by passing `model_config=`. Patch tokens become the (C, h, w) grid; the CLS token is dropped and
position embeddings are interpolated so any image size in multiples of the patch works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.encoders.torch_encoder import TorchEncoder

Family = Literal["dinov2", "clip"]
DEFAULT_MODELS: dict[str, str] = {"dinov2": "facebook/dinov2-small", "clip": "openai/clip-vit-base-patch16"}
_NORMALISATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def _model_class(family: str) -> type[Any]:
    import transformers

    return transformers.Dinov2Model if family == "dinov2" else transformers.CLIPVisionModel


def _checkpoint_normalisation(model: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """mean/std from a local checkpoint's preprocessor_config.json, when it has one."""
    cfg = Path(model) / "preprocessor_config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
        return tuple(data["image_mean"]), tuple(data["image_std"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def load_vision_model(family: str, model: str | None, model_config: Any | None) -> torch.nn.Module:
    """The transformers vision tower: from a config (random weights) or `from_pretrained(model)`."""
    cls = _model_class(family)
    if model_config is not None:
        if model is not None:
            raise ConfigError(f"{family}: give model= (a checkpoint) or model_config= (random weights), not both")
        if family == "clip" and hasattr(model_config, "vision_config"):
            model_config = model_config.vision_config
        return cls(model_config)
    name = model or DEFAULT_MODELS[family]
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelError(f"{family} checkpoint directory not found: {name} (expected a folder with config.json)")
    try:
        return cls.from_pretrained(str(Path(name).expanduser()) if looks_local else name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot load {family} checkpoint {name!r}: {first}. Pass a local directory with config.json and weights, "
            "or a hub id with network access"
        ) from None


class HFVisionEncoder(TorchEncoder):
    """A ViT (DINOv2 or CLIP vision) whose patch tokens form the feature map; stride = patch size."""

    def __init__(
        self,
        family: Family = "dinov2",
        *,
        model: str | None = None,
        model_config: Any | None = None,
        input_size: int = 448,
    ) -> None:
        if family not in DEFAULT_MODELS:
            raise ConfigError(f"transformers encoder family must be one of {sorted(DEFAULT_MODELS)}, got {family!r}")
        net = load_vision_model(family, model, model_config)
        cfg = net.config
        mean, std = _NORMALISATION[family]
        if model is not None and (norm := _checkpoint_normalisation(model)) is not None:
            mean, std = norm  # type: ignore[assignment]
        self.family = family
        tag = model or (DEFAULT_MODELS[family] if model_config is None else "random")
        super().__init__(
            net,
            name=f"{family}:{tag}",
            dim=int(cfg.hidden_size),
            stride=int(cfg.patch_size),
            input_size=input_size,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        if self.family == "clip":
            out = self.module(pixel_values=x, interpolate_pos_encoding=True)
        else:
            out = self.module(pixel_values=x)
        tokens = out.last_hidden_state[:, -h * w :, :]  # drop CLS (and any register tokens before the patches)
        return tokens.transpose(1, 2).reshape(1, -1, h, w)
