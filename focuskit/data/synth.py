"""Synthetic few-shot localization episodes that can only be solved by matching the supports' *instance*.

Every frame of an episode shows several objects of the **same shape** (the "category"); they differ only in instance
details: base color, surface pattern (stripes, checks, dots, rings) with its own color, frequency and angle, and a
small mark. The target keeps its instance identity across frames while its position, scale, rotation and brightness
change, and the background changes kind (smooth noise, gradients, crops of real photos shipped with scikit-image).
Distractors are mutations of the target that change one or two attributes, so a model that only finds "a star"
scores about 1/objects, and one that matches the supports' instance scores well.

Each episode is drawn from its own generator seeded by (seed, index), so the same seed gives byte-identical files,
and a larger `episodes` count only appends episodes to a smaller run's.

    config = SynthConfig(episodes=100, shots=4, seed=0)
    path = write_synth_dataset(config, "data/synth")   # data/synth/episodes.jsonl + data/synth/images/*.png
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.errors import ConfigError
from focuskit.core.io import atomic_write_bytes
from focuskit.data.episodes_jsonl import write_episodes

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross")
PATTERNS: tuple[str, ...] = ("solid", "stripes", "checker", "dots", "rings")
BACKGROUNDS: tuple[str, ...] = ("noise", "gradient", "photo")
PHOTOS: tuple[str, ...] = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
    "retina.jpg", "brick.png", "grass.png", "gravel.png", "color.png",
)  # fmt: skip
"""Photos that ship inside scikit-image's wheel (no download), used as background crops."""

BackgroundKind = Literal["noise", "gradient", "photo"]


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are pixels; scales are the object's side as a fraction of the image side."""

    episodes: int = 100
    shots: int = 4
    image_size: int = 112
    objects: int = 3
    """Objects per frame including the target (1 = no distractors: then the task is plain localization)."""
    absent_rate: float = 0.0
    """Fraction of episodes whose query shows only distractors (`query.box = null`)."""
    seed: int = 0
    min_scale: float = 0.2
    max_scale: float = 0.36
    backgrounds: tuple[str, ...] = BACKGROUNDS
    max_rotation: float = 25.0
    """Degrees of random rotation per frame."""
    brightness_jitter: float = 0.15
    """Per-frame multiplicative brightness change of each object, +- this fraction."""
    mutations: tuple[int, int] = (1, 2)
    """Distractors differ from the target in this many (min, max) appearance attributes."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")
        if self.shots < 1:
            raise ConfigError(f"shots must be >= 1, got {self.shots}")
        if self.image_size < 32:
            raise ConfigError(f"image_size must be >= 32 pixels, got {self.image_size}")
        if self.objects < 1:
            raise ConfigError(f"objects must be >= 1 (the target), got {self.objects}")
        if not 0.0 <= self.absent_rate <= 1.0:
            raise ConfigError(f"absent_rate must be in [0, 1], got {self.absent_rate}")
        if self.absent_rate > 0 and self.objects < 2:
            raise ConfigError(
                f"absent_rate {self.absent_rate} needs objects >= 2: an absent query shows only distractors, "
                f"and objects={self.objects} leaves none"
            )
        if not 0.05 <= self.min_scale <= self.max_scale <= 0.9:
            raise ConfigError(
                f"need 0.05 <= min_scale <= max_scale <= 0.9, got min_scale={self.min_scale}, "
                f"max_scale={self.max_scale}"
            )
        if self.objects * self.min_scale**2 > 0.5:
            raise ConfigError(
                f"{self.objects} objects of min_scale {self.min_scale} cannot fit without overlap: "
                f"lower objects or min_scale (objects * min_scale^2 must be <= 0.5)"
            )
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if bad or not self.backgrounds:
            raise ConfigError(f"backgrounds must be a non-empty subset of {list(BACKGROUNDS)}, got {self.backgrounds}")
        lo, hi = self.mutations
        if not 1 <= lo <= hi <= 4:
            raise ConfigError(f"mutations must be (min, max) with 1 <= min <= max <= 4, got {self.mutations}")


@dataclass(frozen=True)
class Appearance:
    """One object instance: everything that tells it apart from others of the same shape."""

    color: tuple[int, int, int]
    pattern: str
    pattern_color: tuple[int, int, int]
    frequency: float
    """Pattern repetitions across the object."""
    angle: float
    """Pattern angle in degrees, in the object's own frame (it rotates with the object)."""
    mark: tuple[float, float]
    """Centre of a small mark, in the object's normalised [0, 1] frame."""
    mark_color: tuple[int, int, int]


@dataclass
class SynthEpisode:
    """An episode in memory: `shots` support frames, then the query frame; boxes in pixels."""

    index: int
    shape: str
    supports: list[tuple[Image.Image, Box]]
    query: Image.Image
    query_box: Box | None
    meta: dict[str, object] = field(default_factory=dict)


# --- appearance --------------------------------------------------------------------------------------------------
def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated color from a random hue, so instances differ visibly rather than by a few gray levels."""
    h = float(rng.random())
    s = float(rng.uniform(0.55, 1.0))
    v = float(rng.uniform(0.55, 1.0))
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (int(r * 255), int(g * 255), int(b * 255))


def random_appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        color=_random_color(rng),
        pattern=str(rng.choice(PATTERNS)),
        pattern_color=_random_color(rng),
        frequency=float(rng.uniform(2.0, 5.0)),
        angle=float(rng.uniform(0, 180)),
        mark=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.35, 0.65))),
        mark_color=_random_color(rng),
    )


def mutate_appearance(base: Appearance, rng: np.random.Generator, n_changes: int) -> Appearance:
    """A look-alike: `base` with `n_changes` of its attribute groups redrawn (and forced to differ)."""
    groups = ["color", "pattern", "pattern_color", "texture", "mark"]
    chosen = rng.choice(len(groups), size=min(n_changes, len(groups)), replace=False)
    out = base
    for gi in sorted(int(i) for i in chosen):
        g = groups[gi]
        if g == "color":
            out = replace(out, color=_far_color(base.color, rng))
        elif g == "pattern":
            others = [p for p in PATTERNS if p != base.pattern]
            out = replace(out, pattern=str(rng.choice(others)))
        elif g == "pattern_color":
            out = replace(out, pattern_color=_far_color(base.pattern_color, rng))
        elif g == "texture":
            freq = base.frequency + float(rng.choice([-1, 1])) * float(rng.uniform(1.2, 2.0))
            out = replace(out, frequency=float(np.clip(freq, 1.5, 6.5)), angle=(base.angle + 90.0) % 180.0)
        else:
            mx, my = base.mark
            out = replace(out, mark=(1.0 - mx, 1.0 - my), mark_color=_far_color(base.mark_color, rng))
    if out.pattern == "solid" and base.pattern == "solid" and out.color == base.color:
        out = replace(out, color=_far_color(base.color, rng))  # a solid look-alike must differ in something visible
    return out


def _far_color(color: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """A random color at least ~100 RGB units from `color`, so changed instances are not near-duplicates."""
    best = _random_color(rng)
    for _ in range(20):
        if math.dist(best, color) >= 100:
            return best
        best = _random_color(rng)
    return best


# --- rendering ---------------------------------------------------------------------------------------------------
def _shape_polygon(shape: str, size: int) -> list[tuple[float, float]] | None:
    """Vertices of `shape` inscribed in a size x size square; None for the circle (drawn as an ellipse)."""
    c = (size - 1) / 2
    r = size / 2 - 0.5

    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [
            (c + radius * math.cos(phase + 2 * math.pi * k / n), c + radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)
        ]

    if shape == "circle":
        return None
    if shape == "square":
        m = size * 0.08
        return [(m, m), (size - 1 - m, m), (size - 1 - m, size - 1 - m), (m, size - 1 - m)]
    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "diamond":
        return ring(4, r, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        a, b = size * 0.33, size * 0.67
        e = size - 1
        return [(a, 0), (b, 0), (b, a), (e, a), (e, b), (b, b), (b, e), (a, e), (a, b), (0, b), (0, a), (a, a)]
    raise ConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def shape_mask(shape: str, size: int) -> Image.Image:
    """An 'L' mask (255 inside) of the shape, size x size pixels."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    poly = _shape_polygon(shape, size)
    if poly is None:
        draw.ellipse((0, 0, size - 1, size - 1), fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def render_texture(appearance: Appearance, size: int, brightness: float = 1.0) -> np.ndarray:
    """(size, size, 3) uint8: base color with the instance's pattern and mark, in the object's own frame.

    Pattern coordinates are normalised to the object, so the instance looks the same at every scale.
    """
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    v, u = np.meshgrid(t, t, indexing="ij")
    a = math.radians(appearance.angle)
    ru = (u - 0.5) * math.cos(a) + (v - 0.5) * math.sin(a)
    rv = -(u - 0.5) * math.sin(a) + (v - 0.5) * math.cos(a)
    f = appearance.frequency
    if appearance.pattern == "stripes":
        on = np.sin(2 * math.pi * f * ru) > 0
    elif appearance.pattern == "checker":
        on = (np.floor(ru * f * 2) + np.floor(rv * f * 2)) % 2 == 0
    elif appearance.pattern == "dots":
        gu = (ru * f * 1.5) % 1.0 - 0.5
        gv = (rv * f * 1.5) % 1.0 - 0.5
        on = gu**2 + gv**2 < 0.09
    elif appearance.pattern == "rings":
        on = np.sin(2 * math.pi * f * np.sqrt(ru**2 + rv**2) * 1.5) > 0
    else:
        on = np.zeros_like(ru, dtype=bool)
    img = np.where(on[..., None], np.array(appearance.pattern_color), np.array(appearance.color)).astype(np.float32)
    mx, my = appearance.mark
    mark = (np.abs(u - mx) < 0.1) & (np.abs(v - my) < 0.1)
    img[mark] = appearance.mark_color
    return np.clip(img * brightness, 0, 255).astype(np.uint8)


def render_object(
    shape: str, appearance: Appearance, size: int, rotation: float, brightness: float
) -> tuple[Image.Image, Image.Image]:
    """(RGB sprite, 'L' mask), rotated by `rotation` degrees with the canvas expanded to fit."""
    sprite = Image.fromarray(render_texture(appearance, size, brightness))
    mask = shape_mask(shape, size)
    if rotation:
        sprite = sprite.rotate(rotation, resample=Image.Resampling.BILINEAR, expand=True)
        mask = mask.rotate(rotation, resample=Image.Resampling.BILINEAR, expand=True)
    return sprite, mask


class BackgroundMaker:
    """Draws backgrounds; holds the decoded scikit-image photos so each is read from disk once per generator."""

    def __init__(self) -> None:
        self._photos: list[np.ndarray] | None = None

    def photos(self) -> list[np.ndarray]:
        if self._photos is None:
            import skimage.data

            root = Path(skimage.data.__file__).parent
            loaded = []
            for name in PHOTOS:
                path = root / name
                if path.is_file():
                    with Image.open(path) as im:
                        loaded.append(np.asarray(im.convert("RGB")))
            self._photos = loaded
        return self._photos

    def make(self, kind: str, size: int, rng: np.random.Generator) -> Image.Image:
        if kind == "photo" and self.photos():
            photos = self.photos()
            photo = photos[int(rng.integers(len(photos)))]
            h, w = photo.shape[:2]
            side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(photo[y : y + side, x : x + side])
            return crop.resize((size, size), Image.Resampling.BILINEAR)
        if kind == "gradient":
            c1, c2 = np.array(_random_color(rng), np.float32), np.array(_random_color(rng), np.float32)
            a = float(rng.uniform(0, 2 * math.pi))
            t = np.linspace(-0.5, 0.5, size, dtype=np.float32)
            yy, xx = np.meshgrid(t, t, indexing="ij")
            w = np.clip(xx * math.cos(a) + yy * math.sin(a) + 0.5, 0, 1)[..., None]
            return Image.fromarray((c1 * (1 - w) + c2 * w).astype(np.uint8))
        # Smooth noise: a coarse random grid upsampled, plus fine grain, so edges of objects are not the only edges.
        coarse = rng.integers(0, 256, size=(int(rng.integers(3, 9)),) * 2 + (3,), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        grain = rng.normal(0, 12, size=(size, size, 3))
        return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def _place(sizes: list[int], image_size: int, rng: np.random.Generator) -> list[tuple[int, int]] | None:
    """Top-left corners for non-overlapping squares (1 px gap), or None after too many tries."""
    placed: list[tuple[int, int, int]] = []
    for s in sizes:
        for _ in range(60):
            x, y = int(rng.integers(0, image_size - s + 1)), int(rng.integers(0, image_size - s + 1))
            if all(x + s + 1 <= px or px + ps + 1 <= x or y + s + 1 <= py or py + ps + 1 <= y for px, py, ps in placed):
                placed.append((x, y, s))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def render_frame(
    config: SynthConfig,
    shape: str,
    appearances: list[Appearance],
    rng: np.random.Generator,
    backgrounds: BackgroundMaker,
) -> tuple[Image.Image, list[Box]]:
    """One frame with every appearance drawn once at a random pose; returns the image and each object's tight box."""
    n = config.image_size
    bg = backgrounds.make(str(rng.choice(config.backgrounds)), n, rng)
    for shrink in (1.0, 0.8, 0.65, 0.5):
        sprites, masks = [], []
        for app in appearances:
            side = round(n * float(rng.uniform(config.min_scale, config.max_scale)) * shrink)
            side = max(side, 8)
            rot = float(rng.uniform(-config.max_rotation, config.max_rotation))
            bright = 1.0 + float(rng.uniform(-config.brightness_jitter, config.brightness_jitter))
            sprite, mask = render_object(shape, app, side, rot, bright)
            sprites.append(sprite)
            masks.append(mask)
        corners = _place([max(s.size) for s in sprites], n, rng)
        if corners is not None:
            break
    else:
        raise ConfigError(f"could not place {len(appearances)} objects in a {n}px frame; lower objects or max_scale")
    boxes = []
    for sprite, mask, (x, y) in zip(sprites, masks, corners, strict=True):
        bg.paste(sprite, (x, y), mask)
        bbox = mask.point(lambda p: 255 if p >= 128 else 0).getbbox()
        if bbox is None:  # degenerate tiny mask: fall back to the sprite canvas
            bbox = (0, 0, *mask.size)
        bx1, by1, bx2, by2 = bbox
        boxes.append(Box(x + bx1, y + by1, x + bx2, y + by2))
    return bg, boxes


def generate_episode(config: SynthConfig, index: int, backgrounds: BackgroundMaker | None = None) -> SynthEpisode:
    """Episode `index` of the dataset `config` describes; depends only on (config, index)."""
    rng = np.random.default_rng([config.seed, index])
    backgrounds = backgrounds or BackgroundMaker()
    shape = str(rng.choice(SHAPES))
    target = random_appearance(rng)
    lo, hi = config.mutations
    distractors = [
        mutate_appearance(target, rng, int(rng.integers(lo, hi + 1))) for _ in range(max(config.objects - 1, 0))
    ]
    absent = bool(rng.random() < config.absent_rate)
    supports = []
    for _ in range(config.shots):
        img, boxes = render_frame(config, shape, [target, *distractors], rng, backgrounds)
        supports.append((img, boxes[0]))
    if absent:
        query, others = render_frame(config, shape, distractors, rng, backgrounds)
        qbox = None
    else:
        # The same look-alikes as in the supports: only the target's instance details tell it apart.
        query, boxes = render_frame(config, shape, [target, *distractors], rng, backgrounds)
        qbox, others = boxes[0], boxes[1:]
    meta = {
        "generator": "focuskit.synth",
        "seed": config.seed,
        "index": index,
        "shape": shape,
        "absent": absent,
        "query_distractors": [b.as_list() for b in others],
    }
    return SynthEpisode(index=index, shape=shape, supports=supports, query=query, query_box=qbox, meta=meta)


def iter_synth_episodes(config: SynthConfig) -> Iterator[SynthEpisode]:
    backgrounds = BackgroundMaker()
    for i in range(config.episodes):
        yield generate_episode(config, i, backgrounds)


def _save_png(img: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(path, buf.getvalue())


def write_synth_dataset(
    config: SynthConfig, out_dir: str | Path, *, filename: str = "episodes.jsonl", progress: bool = True
) -> Path:
    """Render `config.episodes` episodes into `out_dir/images/` and write `out_dir/<filename>`; return its path."""
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    prefix = f"s{config.seed}"

    def episodes() -> Iterator[Episode]:
        bar = tqdm(iter_synth_episodes(config), total=config.episodes, desc="synth", unit="ep", disable=not progress)
        for ep in bar:
            stem = f"{prefix}_{ep.index:06d}"
            sups = []
            for j, (img, box) in enumerate(ep.supports):
                path = images / f"{stem}_s{j}.png"
                _save_png(img, path)
                sups.append(Support(path, box))
            qpath = images / f"{stem}_q.png"
            _save_png(ep.query, qpath)
            yield Episode(
                id=f"synth-{config.seed}-{ep.index:06d}",
                supports=tuple(sups),
                query_image=qpath,
                query_box=ep.query_box,
                meta=ep.meta,
            )

    path = out / filename
    write_episodes(episodes(), path)
    return path
