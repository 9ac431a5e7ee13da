"""The `Encoder` protocol, the `FeatureMap` it returns, and the resize/normalise every network encoder shares.

A feature map is the one thing every training-free engine needs from a network: a (C, h, w) grid whose cells cover
the original image in equal strips. Region embeddings are averages over that grid, weighted by how much of each
cell a box (or mask) covers, so a box smaller than one cell or straddling cell borders still gets an embedding that
moves smoothly with the box instead of jumping between whole cells.

Nothing here imports torch: a feature map holds a torch tensor (the reference encoders) or a numpy array (the ONNX
runtime, `onnx_runtime`), and every region operation works on its numpy view, so the detect path can run without
torch. `TorchEncoder` lives in `torch_encoder` and is still importable from here (loaded on first access).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from focuskit.core.errors import BoxError, ImageError
from focuskit.core.lazy import lazy_attributes

if TYPE_CHECKING:
    import torch

__getattr__ = lazy_attributes(__name__, {"TorchEncoder": "focuskit.models.encoders.torch_encoder"})


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

    features: torch.Tensor | np.ndarray
    """(C, h, w) float32: a torch tensor from the torch encoders, a numpy array from the ONNX runtime."""
    image_size: tuple[int, int]
    """(width, height) of the original image, in pixels."""
    _array: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _unit: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _integral: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

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
            f = self.features
            if isinstance(f, np.ndarray):
                self._array = np.ascontiguousarray(f, dtype=np.float32)
            else:  # a torch tensor: torch is imported already, since something made it
                self._array = f.detach().float().cpu().numpy()
        return self._array

    @property
    def unit(self) -> np.ndarray:
        """(C, h, w) with every cell's feature vector scaled to unit length (for cosine maps)."""
        if self._unit is None:
            self._unit = l2_normalize(self.array, axis=0)
        return self._unit

    @property
    def integral(self) -> np.ndarray:
        """(h+1, w+1, C) summed-area table: entry [i, j] sums the feature vectors of the cells above-left of (i, j).

        Channels last, so looking up N corners reads N contiguous rows.
        """
        if self._integral is None:
            c, h, w = self.array.shape
            table = np.zeros((h + 1, w + 1, c), dtype=np.float64)
            table[1:, 1:] = self.array.transpose(1, 2, 0).astype(np.float64).cumsum(0).cumsum(1)
            self._integral = table
        return self._integral

    def _integral_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The feature integral over [0, x] x [0, y] (cell units, fractional) for N points: (N, C).

        The integral of a piecewise-constant grid is exactly bilinear between the summed-area table's entries.
        """
        table = self.integral
        hp, wp, _ = table.shape
        i0 = np.clip(np.floor(ys).astype(np.int64), 0, hp - 2)
        j0 = np.clip(np.floor(xs).astype(np.int64), 0, wp - 2)
        fy = (ys - i0)[:, None]
        fx = (xs - j0)[:, None]
        t00, t01 = table[i0, j0], table[i0, j0 + 1]
        t10, t11 = table[i0 + 1, j0], table[i0 + 1, j0 + 1]
        return (1 - fy) * ((1 - fx) * t00 + fx * t01) + fy * ((1 - fx) * t10 + fx * t11)

    def pool_boxes(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy pixel boxes -> (N, C) L2-normalised averages of the features inside each box.

        Cells are weighted by the area of the box that falls in them (exactly, through a summed-area table, so the
        cost per box does not grow with its size). Boxes are clipped to the image; an empty input gives (0, C).
        """
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        width, height = self.image_size
        gw, gh = self.grid_size
        x1 = np.clip(boxes[:, 0], 0, width) * (gw / width)
        x2 = np.clip(boxes[:, 2], 0, width) * (gw / width)
        y1 = np.clip(boxes[:, 1], 0, height) * (gh / height)
        y2 = np.clip(boxes[:, 3], 0, height) * (gh / height)
        empty = np.flatnonzero((x2 <= x1) | (y2 <= y1))
        if empty.size:
            i = int(empty[0])
            raise BoxError(
                f"box {i} {boxes[i].round(2).tolist()} has no area inside the {width}x{height} image: "
                "need x2 > x1 and y2 > y1 within the image"
            )
        summed = (
            self._integral_at(y2, x2)
            - self._integral_at(y1, x2)
            - self._integral_at(y2, x1)
            + self._integral_at(y1, x1)
        )
        area = (x2 - x1) * (y2 - y1)
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


def preprocess_array(
    image: Image.Image,
    *,
    input_size: int,
    stride: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """RGB image -> normalised (1, 3, h*stride, w*stride) float32 array: the input of every network encoder.

    Longer side to about `input_size`, each side to a stride multiple (so cells tile the image exactly), bilinear;
    then (x / 255 - mean) / std per channel. The torch and the ONNX runtimes both call this, so they see the same
    pixels.
    """
    gw, gh = resized_grid(image.size, input_size, stride)
    resized = image.resize((gw * stride, gh * stride), Image.Resampling.BILINEAR)
    x = (np.asarray(resized, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


class GridEncoder:
    """What a network encoder's two runtimes share (`TorchEncoder`, `OnnxEncoder`): the tag, the grid geometry and
    the input normalisation, so an exported trunk describes itself exactly as the torch module it came from.

    Subclasses implement `forward` on a `preprocess`-ed (1, 3, H, W) batch and `encode`.
    """

    def __init__(
        self,
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
        self.name = name
        self.dim = dim
        self.stride = stride
        self.input_size = input_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __repr__(self) -> str:
        cls = type(self).__name__
        return f"{cls}(name={self.name!r}, dim={self.dim}, stride={self.stride}, input_size={self.input_size})"

    def preprocess_array(self, image: Image.Image) -> np.ndarray:
        """RGB image -> normalised (1, 3, h*stride, w*stride) float32 array (`preprocess_array`)."""
        return preprocess_array(image, input_size=self.input_size, stride=self.stride, mean=self.mean, std=self.std)
