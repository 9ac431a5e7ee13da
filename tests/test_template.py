"""The `template` baseline: exact and rescaled copies are found, low correlation means absent, options are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focuskit.core.box import Box, iou
from focuskit.core.episode import Support
from focuskit.core.errors import BoxError, ConfigError
from focuskit.localizers import create_localizer
from focuskit.localizers.template import TemplateConfig, TemplateLocalizer

PHOTOS = Path(__file__).resolve().parents[1] / "focuskit" / "assets" / "realphotos"
CAN = Box(345.5, 50.1, 361.9, 79.5)  # the small yellow can in motorcycle_left (640 px wide copy)


def _scene(tmp_path: Path, name: str, scale: float = 1.0, mode: str = "RGB") -> tuple[Path, float]:
    img = Image.open(PHOTOS / "moto_left.jpg")
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    path = tmp_path / f"{name}.png"
    img.convert(mode).save(path)
    return path, scale


def test_finds_an_exact_copy(tmp_path: Path) -> None:
    scene, _ = _scene(tmp_path, "scene")
    pred = create_localizer("template").localize([Support(PHOTOS / "moto_left.jpg", CAN)], scene)
    assert pred.box is not None and iou(pred.box, CAN) >= 0.8 and pred.score > 0.9


def test_finds_a_copy_at_another_scale(tmp_path: Path) -> None:
    """Only the query is resized, so the object's size relative to the image is the same: the base scale covers it."""
    scene, s = _scene(tmp_path, "small", scale=0.7)
    truth = CAN.scale(s)
    pred = TemplateLocalizer().localize([Support(PHOTOS / "moto_left.jpg", CAN)], scene)
    assert pred.box is not None and iou(pred.box, truth) >= 0.5


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba(tmp_path: Path, mode: str) -> None:
    scene, _ = _scene(tmp_path, f"scene_{mode}", mode=mode)
    support_path, _ = _scene(tmp_path, f"support_{mode}", mode=mode)
    pred = TemplateLocalizer().localize([Support(support_path, CAN)], scene)
    assert pred.box is not None and iou(pred.box, CAN) >= 0.8


def test_low_correlation_means_absent(tmp_path: Path) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(noise)
    pred = TemplateLocalizer().localize([Support(PHOTOS / "moto_left.jpg", CAN)], noise)
    assert pred.box is None and pred.score < TemplateConfig().tau
    forced = TemplateLocalizer(TemplateConfig(tau=-1.0)).localize([Support(PHOTOS / "moto_left.jpg", CAN)], noise)
    assert forced.box is not None  # with no threshold, the best position is still returned


def test_best_support_wins(tmp_path: Path) -> None:
    """A useless support (flat grey) must not hide a good one."""
    flat = tmp_path / "flat.png"
    Image.new("RGB", (100, 100), (128, 128, 128)).save(flat)
    scene, _ = _scene(tmp_path, "scene")
    pred = TemplateLocalizer().localize(
        [Support(flat, Box(10, 10, 60, 60)), Support(PHOTOS / "moto_left.jpg", CAN)], scene
    )
    assert pred.box is not None and iou(pred.box, CAN) >= 0.8


def test_no_usable_template_is_absent(tmp_path: Path) -> None:
    """Scaled to a much smaller query, the can would be a few pixels: no template is tried, the answer is absent."""
    tiny = tmp_path / "tiny.png"
    Image.open(PHOTOS / "moto_left.jpg").resize((64, 43)).save(tiny)
    pred = TemplateLocalizer().localize([Support(PHOTOS / "moto_left.jpg", CAN)], tiny)
    assert pred.box is None and pred.meta == {"templates": 0, "reason": "no template fits the query"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau": 1.5}, "tau must be in"),
        ({"config": "missing.yaml"}, "config file not found"),
        ({"encoder": "mobilenetv2"}, "does not take option"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_localizer("template", **options)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"scales": []}, "scales must be positive"),
        ({"work_size": 8}, "work_size"),
        ({"min_template": 1}, "min_template"),
    ],
)
def test_bad_config_values(cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TemplateConfig(**cfg)  # type: ignore[arg-type]


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("tau: 0.3\nscales: [1.0, 2.0]\n")
    loc = create_localizer("template", config=path)
    assert isinstance(loc, TemplateLocalizer) and loc.config.tau == 0.3 and loc.config.scales == [1.0, 2.0]


def test_box_outside_the_support_is_an_error() -> None:
    with pytest.raises(BoxError, match="outside"):
        TemplateLocalizer().localize(
            [Support(PHOTOS / "moto_left.jpg", Box(600, 10, 700, 50))], PHOTOS / "moto_left.jpg"
        )
