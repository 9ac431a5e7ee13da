"""The `Encoder` protocol, the `FeatureMap` it returns, and the resize/normalise/forward shared by torch encoders.

A feature map is the one thing every training-free engine needs from a network: a (C, h, w) grid whose cells cover
the original image in equal strips. Region embeddings are averages over that grid, weighted by how much of each
cell a box (or mask) covers, so a box smaller than one cell or straddling cell borders still gets an embedding that
moves smoothly with the box instead of jumping between whole cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from PIL import Image

from focuskit.core.errors import BoxError, ImageError
from focuskit.core.image import load_image


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit-length rows; all-zero rows stay zero instead of becoming NaN."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclass
class FeatureMap:
    """A dense feature grid of one image.

    Cell (i, j) covers the pixel strip `[j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h)` of the original W x H image, because
    encoders resize the image to exactly (w*stride, h*stride) before the forward pass.
    """

    features: torch.Tensor
    """(C, h, w) float32."""
    image_size: tuple[int, int]
    """(width, height) of the original image, in pixels."""
    _array: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _unit: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.features.ndim != 3:
            raise ValueError(f"FeatureMap.features must be (C, h, w), got shape {tuple(self.features.shape)}")

    @property
    def dim(self) -> int:
        return int(self.features.shape[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        """(w, h): cells across and down."""
        return int(self.features.shape[2]), int(self.features.shape[1])

    @property
    def array(self) -> np.ndarray:
        """The features as a (C, h, w) float32 numpy array (converted once)."""
        if self._array is None:
            self._array = self.features.detach().to(torch.float32).cpu().numpy()
        return self._array

    @property
    def unit(self) -> np.ndarray:
        """(C, h, w) with every cell's feature vector scaled to unit length (for cosine maps)."""
        if self._unit is None:
            self._unit = l2_normalize(self.array, axis=0)
        return self._unit

    def _axis_weights(self, lo: np.ndarray, hi: np.ndarray, extent: int, cells: int) -> np.ndarray:
        """(N, cells): the length of [lo, hi) that falls in each cell's strip of the image axis."""
        edges = np.arange(cells + 1, dtype=np.float64) * (extent / cells)
        return np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None)

    def box_weights(self, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-box coverage of grid rows (N, h) and columns (N, w); boxes are clipped to the image first."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        width, height = self.image_size
        gw, gh = self.grid_size
        x1 = np.clip(boxes[:, 0], 0, width)
        x2 = np.clip(boxes[:, 2], 0, width)
        y1 = np.clip(boxes[:, 1], 0, height)
        y2 = np.clip(boxes[:, 3], 0, height)
        empty = np.flatnonzero((x2 <= x1) | (y2 <= y1))
        if empty.size:
            i = int(empty[0])
            raise BoxError(
                f"box {i} {boxes[i].round(2).tolist()} has no area inside the {width}x{height} image: "
                "need x2 > x1 and y2 > y1 within the image"
            )
        return self._axis_weights(y1, y2, height, gh), self._axis_weights(x1, x2, width, gw)

    def pool_boxes(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy pixel boxes -> (N, C) L2-normalised averages of the features inside each box.

        Cells are weighted by the area of the box that falls in them. An empty input gives a (0, C) array.
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        wy, wx = self.box_weights(boxes)
        # Contract width first, then height: N*C*h*w multiply-adds, no (N, h, w) weight tensor.
        summed = np.einsum("nh,nch->nc", wy, np.einsum("chw,nw->nch", self.array, wx, optimize=True), optimize=True)
        area = wy.sum(1) * wx.sum(1)
        return l2_normalize(summed / area[:, None]).astype(np.float32)

    def pool_masks(self, masks: np.ndarray) -> np.ndarray:
        """(N, H, W) boolean masks at the original image size -> (N, C) L2-normalised mask averages.

        Each cell is weighted by the fraction of its pixels inside the mask, so thin or small masks still count.
        """
        m = np.asarray(masks)
        if m.ndim == 2:
            m = m[None]
        width, height = self.image_size
        if m.ndim != 3 or m.shape[1:] != (height, width):
            raise ImageError(
                f"masks must be (N, {height}, {width}) to match the {width}x{height} image, got shape {m.shape}"
            )
        if len(m) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        gw, gh = self.grid_size
        # INTER_AREA averages the pixels under each cell: the fraction of the cell inside the mask.
        cover = np.stack([cv2.resize(mi.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) for mi in m])
        total = cover.reshape(len(m), -1).sum(1)
        empty = np.flatnonzero(total <= 0)
        if empty.size:
            raise ImageError(f"mask {int(empty[0])} is empty: a region needs at least one pixel set")
        summed = np.einsum("nhw,chw->nc", cover, self.array, optimize=True)
        return l2_normalize(summed / total[:, None]).astype(np.float32)

    def similarity(self, embedding: np.ndarray) -> np.ndarray:
        """Cosine similarity of every cell with `embedding`: (C,) -> (h, w); also (K, C) -> (K, h, w)."""
        e = np.asarray(embedding, dtype=np.float32)
        if e.shape[-1] != self.dim or e.ndim not in (1, 2):
            raise ValueError(f"embedding must be ({self.dim},) or (K, {self.dim}), got shape {e.shape}")
        e = l2_normalize(e)
        return np.tensordot(e, self.unit, axes=([e.ndim - 1], [0]))


@runtime_checkable
class Encoder(Protocol):
    """Turns an image into a `FeatureMap`.

    `name` tags every embedding the encoder makes (a concept memory refuses to mix tags), `dim` is C and `stride` the
    number of input pixels per feature cell at the encoder's own input resolution.
    """

    name: str
    dim: int
    stride: int

    def encode(self, image: Image.Image) -> FeatureMap: ...


def resized_grid(image_size: tuple[int, int], input_size: int, stride: int) -> tuple[int, int]:
    """Grid (w, h) when the longer side is scaled to about `input_size` pixels and each side to a stride multiple."""
    width, height = image_size
    scale = input_size / max(width, height)
    return max(1, round(width * scale / stride)), max(1, round(height * scale / stride))


class TorchEncoder:
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
        if input_size < stride:
            raise ValueError(f"input_size must be at least the stride ({stride}), got {input_size}")
        self.module = module.eval()
        self.name = name
        self.dim = dim
        self.stride = stride
        self.input_size = input_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        cls = type(self).__name__
        return f"{cls}(name={self.name!r}, dim={self.dim}, stride={self.stride}, input_size={self.input_size})"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> normalised (1, 3, h*stride, w*stride) float tensor."""
        gw, gh = resized_grid(image.size, self.input_size, self.stride)
        resized = image.resize((gw * self.stride, gh * self.stride), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
        return (x - self._mean) / self._std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) -> (1, C, H/stride, W/stride). Subclasses with non-convolutional outputs override this."""
        return self.module(x)

    def encode(self, image: Image.Image) -> FeatureMap:
        rgb = load_image(image)
        with torch.inference_mode():
            feats = self.forward(self.preprocess(rgb))[0].to(torch.float32)
        return FeatureMap(features=feats.clone(), image_size=rgb.size)
