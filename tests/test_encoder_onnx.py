"""The encoder on the ONNX runtime (cv2.dnn) against the torch reference: same tag, same features, same region
embeddings on real photos; feature maps holding numpy behave like those holding a tensor; the export is cached,
keyed, rebuilt when damaged, and the backend choice follows the code and the environment variable.

Real photos: focuskit/assets/realphotos (opencv-doc video frames and scikit-image samples shipped with the package).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.encoders import create_encoder, encoder_backend, onnx_runtime, use_encoder_backend
from focuskit.models.encoders.base import FeatureMap
from focuskit.models.encoders.mobilenetv2 import MobileNetV2Encoder
from focuskit.models.encoders.onnx_runtime import OnnxEncoder, mobilenetv2_onnx_path, onnx_mobilenetv2

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REAL = Path(__file__).resolve().parent.parent / "focuskit" / "assets" / "realphotos"
PHOTOS = ["cup_f0035.jpg", "box_in_scene.jpg", "bikes_f0106.jpg", "astronaut.jpg", "moto_left.jpg"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache for the module's exports (never the user's)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOCUSKIT_CACHE_DIR", str(folder))
        mp.delenv("FOCUSKIT_ENCODER_BACKEND", raising=False)
        yield folder


@pytest.fixture(scope="module")
def pair(cache: Path) -> tuple[MobileNetV2Encoder, OnnxEncoder]:
    onnx = onnx_mobilenetv2(layer="s16", required=True)
    assert onnx is not None
    return MobileNetV2Encoder(layer="s16"), onnx


def _photo(name: str) -> Image.Image:
    return Image.open(REAL / name).convert("RGB")


def test_same_tag_and_shape(pair: tuple[MobileNetV2Encoder, OnnxEncoder]) -> None:
    ref, onnx = pair
    assert (onnx.name, onnx.dim, onnx.stride, onnx.input_size) == (ref.name, ref.dim, ref.stride, ref.input_size)
    assert onnx.name == "mobilenetv2"  # the tag stored memories carry


def test_same_input_pixels(pair: tuple[MobileNetV2Encoder, OnnxEncoder]) -> None:
    ref, onnx = pair
    image = _photo("cup_f0035.jpg")
    np.testing.assert_array_equal(onnx.preprocess(image), ref.preprocess(image).numpy())


@pytest.mark.parametrize("name", PHOTOS)
def test_features_and_region_embeddings_match_torch(pair: tuple[MobileNetV2Encoder, OnnxEncoder], name: str) -> None:
    ref, onnx = pair
    image = _photo(name)
    want, got = ref.encode(image), onnx.encode(image)
    assert isinstance(got.features, np.ndarray) and isinstance(want.features, torch.Tensor)
    assert got.grid_size == want.grid_size and got.image_size == want.image_size
    scale = np.abs(want.array).max()
    assert np.abs(got.array - want.array).max() <= 1e-4 * scale
    w, h = image.size
    rng = np.random.default_rng(0)
    x1, y1 = rng.uniform(0, w * 0.6, 32), rng.uniform(0, h * 0.6, 32)
    boxes = np.stack([x1, y1, x1 + rng.uniform(8, w * 0.4, 32), y1 + rng.uniform(8, h * 0.4, 32)], 1)
    e_want, e_got = want.pool_boxes(boxes), got.pool_boxes(boxes)
    assert np.abs(e_got - e_want).max() <= 1e-4 * np.abs(e_want).max()
    assert np.all(np.sum(e_got * e_want, 1) > 1 - 1e-6)


def test_parts_embeddings_match_torch(cache: Path) -> None:
    """The default encoder (s16 + 3x3 parts) through both runtimes: the vectors a memory stores and a query makes."""
    with use_encoder_backend("torch"):
        ref = create_encoder("mobilenetv2", layer="s16", parts=3)
    with use_encoder_backend("onnx"):
        onnx = create_encoder("mobilenetv2", layer="s16", parts=3)
    assert isinstance(onnx.inner, OnnxEncoder) and isinstance(ref.inner, MobileNetV2Encoder)  # type: ignore[attr-defined]
    assert onnx.name == ref.name == "mobilenetv2+parts3w0.3"
    image = _photo("box_in_scene.jpg")
    boxes = np.array([[0, 0, image.width, image.height], [30.5, 40.2, 180.0, 220.7], [100, 50, 140, 90]])
    e_want, e_got = ref.encode(image).pool_boxes(boxes), onnx.encode(image).pool_boxes(boxes)
    assert np.abs(e_got - e_want).max() <= 1e-4 * np.abs(e_want).max()


def test_numpy_and_torch_feature_maps_agree() -> None:
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((8, 5, 7)).astype(np.float32)
    a, b = FeatureMap(feats, (70, 50)), FeatureMap(torch.from_numpy(feats.copy()), (70, 50))
    assert (a.dim, a.grid_size) == (b.dim, b.grid_size) == (8, (7, 5))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.unit, b.unit)
    np.testing.assert_array_equal(a.integral, b.integral)
    boxes = np.array([[0, 0, 70, 50], [3.5, 2.0, 40.0, 31.0]])
    np.testing.assert_array_equal(a.pool_boxes(boxes), b.pool_boxes(boxes))
    mask = np.zeros((1, 50, 70), dtype=bool)
    mask[0, 10:30, 5:50] = True
    np.testing.assert_array_equal(a.pool_masks(mask), b.pool_masks(mask))
    np.testing.assert_array_equal(a.similarity(feats[:, 0, 0]), b.similarity(feats[:, 0, 0]))
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        FeatureMap(feats[0], (70, 50))


def test_export_is_cached_by_weights_hash(pair: tuple[MobileNetV2Encoder, OnnxEncoder], cache: Path) -> None:
    path = mobilenetv2_onnx_path("s16")
    assert path.is_file() and path.parent.parent == cache
    assert "-e" in path.stem and len(path.stem.split("-")[2]) == 16  # mobilenetv2-s16-<sha256[:16]>-e<version>
    stamp = path.stat().st_mtime_ns
    again = onnx_mobilenetv2(layer="s16", required=True)
    assert again is not None and path.stat().st_mtime_ns == stamp  # read, not exported again
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_damaged_export_is_rebuilt(pair: tuple[MobileNetV2Encoder, OnnxEncoder]) -> None:
    ref, _ = pair
    path = mobilenetv2_onnx_path("s16")
    path.write_bytes(b"not an onnx file")
    rebuilt = onnx_mobilenetv2(layer="s16", required=True)
    assert rebuilt is not None and path.stat().st_size > 1_000_000
    image = _photo("moto_left.jpg")
    want = ref.encode(image).array
    assert np.abs(rebuilt.encode(image).array - want).max() <= 1e-4 * np.abs(want).max()


def test_backend_choice(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert encoder_backend() == "torch"  # the default: everything that trains gets the torch module
    assert isinstance(create_encoder("mobilenetv2"), MobileNetV2Encoder)
    with use_encoder_backend("auto"):
        assert encoder_backend() == "auto"
        assert isinstance(create_encoder("mobilenetv2"), OnnxEncoder)
        # Random weights and other encoders stay on torch.
        assert isinstance(create_encoder("mobilenetv2", pretrained=False), MobileNetV2Encoder)
        monkeypatch.setenv("FOCUSKIT_ENCODER_BACKEND", "torch")  # the environment wins over the code
        assert isinstance(create_encoder("mobilenetv2"), MobileNetV2Encoder)
        monkeypatch.setenv("FOCUSKIT_ENCODER_BACKEND", "gpu")
        with pytest.raises(ConfigError, match="FOCUSKIT_ENCODER_BACKEND"):
            create_encoder("mobilenetv2")
    # A command that enters the block (detect) is refused at once, before it opens anything.
    with pytest.raises(ConfigError, match="FOCUSKIT_ENCODER_BACKEND must be one of"), use_encoder_backend("auto"):
        pass
    monkeypatch.delenv("FOCUSKIT_ENCODER_BACKEND")
    assert encoder_backend() == "torch"
    with use_encoder_backend("onnx"), pytest.raises(ConfigError, match="layr"):
        create_encoder("mobilenetv2", layr="s16")  # a typo is refused the same way on both runtimes


def test_failed_export_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ONNX runtime to be had (here: the exporter fails, as without the onnx package): "auto" warns once and
    builds the torch encoder, "onnx" refuses, and nothing half-written is left in the cache."""
    import focuskit.models.encoders.mobilenetv2 as mnv2

    monkeypatch.setenv("FOCUSKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FOCUSKIT_ENCODER_BACKEND", raising=False)

    calls = []

    def broken(layer: str, target: Path, *, input_size: int = 448) -> None:
        calls.append(layer)
        target.write_bytes(b"partial")
        raise RuntimeError("Module onnx is not installed!")

    monkeypatch.setattr(mnv2, "export_onnx", broken)
    with use_encoder_backend("auto"), pytest.warns(RuntimeWarning, match="using torch"):
        encoder = create_encoder("mobilenetv2")
    assert isinstance(encoder, MobileNetV2Encoder) and encoder.name == "mobilenetv2"
    with use_encoder_backend("onnx"), pytest.raises(ModelError, match="onnx is not installed"):
        create_encoder("mobilenetv2")
    # Nothing half-written is left; the failure is remembered (with the packages it happened with)...
    assert [p.name.endswith(".onnx.failed") for p in tmp_path.rglob("*") if p.is_file()] == [True]
    tried = len(calls)
    with use_encoder_backend("auto"), pytest.warns(RuntimeWarning, match="to retry"):
        assert isinstance(create_encoder("mobilenetv2"), MobileNetV2Encoder)
    assert len(calls) == tried  # ...so the next run does not pay the export again
    monkeypatch.setattr(onnx_runtime, "_export_packages", lambda: {"onnx": "1.99"})  # a package was installed
    with use_encoder_backend("auto"), pytest.warns(RuntimeWarning, match="using torch"):
        create_encoder("mobilenetv2")
    assert len(calls) == tried + 1
