"""`TorchEncoder`: the reference runtime of the network encoders (resize/normalise, forward on CPU, `FeatureMap`).

Everything that trains or needs gradients uses it, and it is what the ONNX runtime (`onnx_runtime`) is checked
against. Kept apart from `base` so that importing the feature-map code does not import torch.
"""

from __future__ import annotations

import torch
from PIL import Image

from focuskit.core.image import load_image
from focuskit.models.encoders.base import FeatureMap, GridEncoder


class TorchEncoder(GridEncoder):
    """A torch module that maps a normalised (1, 3, H, W) batch to a (1, C, H/stride, W/stride) map.

    Subclasses build `module`; this class resizes (longer side to `input_size`, sides rounded to stride multiples,
    so cells tile the image exactly), normalises with the network's mean/std and runs the forward pass on CPU.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        name: str,
        dim: int,
        stride: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__(name=name, dim=dim, stride=stride, input_size=input_size, mean=mean, std=std)
        self.module = module.eval()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> normalised (1, 3, h*stride, w*stride) float tensor (`base.preprocess_array`)."""
        return torch.from_numpy(self.preprocess_array(image))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) -> (1, C, H/stride, W/stride). Subclasses with non-convolutional outputs override this."""
        return self.module(x)

    def encode(self, image: Image.Image) -> FeatureMap:
        rgb = load_image(image)
        with torch.inference_mode():
            feats = self.forward(self.preprocess(rgb))[0].to(torch.float32)
        return FeatureMap(features=feats.clone(), image_size=rgb.size)
