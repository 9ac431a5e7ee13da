"""The encoder's feature trunk exported once to ONNX and run by OpenCV's DNN module: encoding without torch.

`import torch` alone is ~2 s of the ~3 s a cold `focuskit detect` took, and the detector itself already runs in
OpenCV (SSD-MobileNetV2 through cv2.dnn). So the first process that wants the ONNX runtime exports the trunk with
torch (`mobilenetv2.export_onnx`, ~2 s once), checks it against torch on two input shapes, and writes it atomically
to the cache (`focuskit.core.cache`) under a name keyed by the weights' SHA-256, the layer and `EXPORT_VERSION`;
every later process reads that file (~10 ms) and never imports torch. Exported lazily on first use rather than in
`setup.sh`: the cache is per user and may be wiped, the package may be installed without the script, and a first
run pays the export only where torch would have been imported anyway.

OpenCV over onnxruntime: cv2 is imported for the proposals already, so this adds no import and no dependency;
measured on a 448 x 336 input it runs the s16 trunk in ~20-50 ms on this machine's CPU, as fast as torch.

Equivalence (tests/test_encoder_onnx.py): features within ~1e-5 of torch's relative to their scale, the same
encoder tag, the same detections. Any failure to export, load or check falls back to torch with one warning
(or raises, when `FOCUSKIT_ENCODER_BACKEND=onnx` demands this runtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from focuskit.core.cache import cache_dir
from focuskit.core.errors import ModelError
from focuskit.core.image import load_image
from focuskit.core.io import atomic_write_json, atomic_write_with
from focuskit.models.encoders.base import FeatureMap, GridEncoder
from focuskit.models.encoders.mobilenetv2_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_layer,
    encoder_name,
    weights_path,
)

EXPORT_VERSION = 1
"""Bump when the exported graph changes (export code, opset, layers): old cache files are then ignored."""
CHECK_TOLERANCE = 1e-4
"""Largest |onnx - torch| / max|torch| accepted when an export is checked; measured ~5e-6."""
_HASHES: dict[tuple[str, int, int], str] = {}


class OnnxEncoder(GridEncoder):
    """An exported (1, 3, H, W) -> (1, C, H/stride, W/stride) trunk run by cv2.dnn, with the torch encoder's inputs.

    Same `name`, `dim`, `stride` and `preprocess_array` as the `TorchEncoder` it was exported from, so its feature
    maps are interchangeable with that encoder's (numpy features instead of a tensor).
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        dim: int,
        stride: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__(name=name, dim=dim, stride=stride, input_size=input_size, mean=mean, std=std)
        self.path = Path(path)
        self._net = cv2.dnn.readNetFromONNX(str(self.path))
        self._lock = threading.Lock()  # a cv2.dnn.Net holds its input and buffers: one forward at a time

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> normalised (1, 3, h*stride, w*stride) float32 array, exactly as the torch encoder's."""
        return self.preprocess_array(image)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 -> (1, C, H/stride, W/stride) float32."""
        with self._lock:
            self._net.setInput(np.ascontiguousarray(x, dtype=np.float32))
            out = self._net.forward()
        return np.array(out, dtype=np.float32, copy=True)

    def encode(self, image: Image.Image) -> FeatureMap:
        rgb = load_image(image)
        return FeatureMap(features=self.forward(self.preprocess(rgb))[0], image_size=rgb.size)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def mobilenetv2_onnx_path(layer: str) -> Path:
    """Where the export of the packaged MobileNetV2 weights at `layer` is cached."""
    check_layer(layer)
    digest = file_sha256(weights_path())[:16]
    tag = layer.replace("+", "-")
    return cache_dir() / "onnx" / f"mobilenetv2-{tag}-{digest}-e{EXPORT_VERSION}.onnx"


def export_and_check(layer: str, target: Path) -> None:
    """Export the trunk at `layer` with torch to `target` (atomically) after checking cv2's output against torch.

    The check runs both on two deterministic inputs of different shapes (the graph must take any size) and refuses
    the export when they differ by more than `CHECK_TOLERANCE` relative to the features' scale.
    """
    import torch

    from focuskit.models.encoders.mobilenetv2 import MobileNetV2Encoder, export_onnx

    def write(tmp: Path) -> None:
        export_onnx(layer, tmp)
        net = cv2.dnn.readNetFromONNX(str(tmp))
        reference = MobileNetV2Encoder(layer=layer)  # type: ignore[arg-type]
        rng = np.random.default_rng(0)
        for h, w in ((224, 320), (448, 288)):
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            with torch.inference_mode():
                want = reference.forward(torch.from_numpy(x)).numpy()
            net.setInput(x)
            got = net.forward()
            err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))
            if got.shape != want.shape or not err <= CHECK_TOLERANCE:
                raise ModelError(
                    f"ONNX export of mobilenetv2 {layer} disagrees with torch on a {h}x{w} input "
                    f"(shape {got.shape} vs {want.shape}, relative error {err:.2e} > {CHECK_TOLERANCE:g})"
                )

    atomic_write_with(target, write)


def onnx_mobilenetv2(
    *, layer: str = "s16", input_size: int = 448, pretrained: bool = True, required: bool = False
) -> OnnxEncoder | None:
    """The packaged MobileNetV2 at `layer` on the ONNX runtime, exporting it first if the cache lacks it.

    Takes `MobileNetV2Encoder`'s options. None (after one warning) when the ONNX runtime cannot be had, so the
    caller uses torch; `required=True` raises `ModelError` instead. A failed export is remembered beside the cache
    file with the versions of the packages it needs, so later runs skip it until one of them changes. Random
    weights (`pretrained=False`) always return None: an export would fix one random draw, and nothing that needs
    speed uses them.
    """
    stride, dim = check_layer(layer)
    if input_size < stride:
        raise ValueError(f"input_size must be at least the stride ({stride}), got {input_size}")
    if not pretrained:
        if required:
            raise ModelError("the ONNX runtime has no random-weight MobileNetV2: use the torch backend")
        return None
    path = mobilenetv2_onnx_path(layer)  # ModelError here (weights package missing) is the user's to see
    options = {"name": encoder_name(layer), "dim": dim, "stride": stride, "input_size": input_size}
    failed = path.with_name(path.name + ".failed")
    remembered = _failed_export(failed)
    if remembered is not None and not required:
        warnings.warn(f"{remembered}; using torch (delete {failed} to retry)", RuntimeWarning, stacklevel=2)
        return None
    try:
        if path.is_file():
            try:
                return OnnxEncoder(path, mean=IMAGENET_MEAN, std=IMAGENET_STD, **options)  # type: ignore[arg-type]
            except cv2.error:
                path.unlink(missing_ok=True)  # damaged (a disk filled up, a copy cut short): export it anew
        export_and_check(layer, path)
        return OnnxEncoder(path, mean=IMAGENET_MEAN, std=IMAGENET_STD, **options)  # type: ignore[arg-type]
    except (ImportError, OSError, RuntimeError, ModelError, cv2.error) as exc:
        message = f"cannot use the ONNX runtime for mobilenetv2 {layer} ({type(exc).__name__}: {exc})"
        if required:
            raise ModelError(message) from None
        with contextlib.suppress(OSError):  # remembered, so later runs with the same packages skip the export
            atomic_write_json(failed, {"message": message, "packages": _export_packages()})
        warnings.warn(f"{message}; using torch", RuntimeWarning, stacklevel=2)
        return None


EXPORT_PACKAGES = ("torch", "onnx", "onnxscript", "opencv-python-headless", "opencv-python")


def _export_packages() -> dict[str, str | None]:
    """Installed versions of what an export depends on (None: not installed), read without importing them."""
    out: dict[str, str | None] = {}
    for name in EXPORT_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _failed_export(marker: Path) -> str | None:
    """The message of an export that failed with the packages installed now, or None (no failure remembered, or
    the packages changed since: installing onnx, say, makes the next run try again)."""
    try:
        data = json.loads(marker.read_text())
        return str(data["message"]) if data.get("packages") == _export_packages() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
