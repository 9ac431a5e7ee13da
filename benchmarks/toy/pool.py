"""Episode pools from rendered frames: many distinct episodes from few rendered (and CNN-encoded) frames.

Rendering a frame and running the frozen CNN on it cost about as much as a training step, so the toy renders each
instance (a target and its same-shape look-alikes) in `frames` poses once and draws episodes as random ordered
subsets of those frames: `frames=6` gives 6*5*4*3*2 = 720 (supports, query) orders per instance at k = 4. The CNN
tower caches features by pixels, so every reuse of a frame is free. Training never sees a fixed small set (the probe
in issue 13 found 800 fixed episodes memorised: pick 0.80 on them, 0.47 held out), while the cost is that of
`instances * frames` images.

Held-out pools use a different seed: new appearances, new poses, new backgrounds.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from focuskit.core.box import Box
from focuskit.core.episode import Episode, Support
from focuskit.core.io import atomic_write_bytes, atomic_write_text
from focuskit.data.episodes_jsonl import write_episodes
from focuskit.data.synth import (
    SHAPES,
    Appearance,
    BackgroundMaker,
    SynthConfig,
    mutate_appearance,
    random_appearance,
    render_frame,
)


@dataclass(frozen=True)
class PoolFrame:
    path: Path
    boxes: tuple[Box, ...]
    """Target first, then the look-alikes (pixels)."""


@dataclass(frozen=True)
class PoolInstance:
    shape: str
    frames: tuple[PoolFrame, ...]
    alone: tuple[tuple[PoolFrame, ...], ...] = ()
    """Per object (target, then look-alikes): frames showing that object alone (for clean-support episodes)."""


VISIBLE_GROUPS: tuple[str, ...] = ("color", "pattern", "pattern_color")
"""Look-alike changes that a 4x4 grid of pooled CNN tokens can see (docs/toy_ablation.md, oracle check): the
object's base colour, its pattern kind and the pattern's colour. The other two groups of `mutate_appearance`
(pattern frequency/angle, the small mark) change a few pixels of a 30-50 px object and are near-invisible there."""


def mutate_within(
    base: Appearance, rng: np.random.Generator, n_changes: int, groups: tuple[str, ...] | None
) -> Appearance:
    """`mutate_appearance`, restricted to attribute `groups` (None: all five) by redrawing until only they changed."""
    for _ in range(200):
        out = mutate_appearance(base, rng, n_changes)
        changed = {
            "color": out.color != base.color, "pattern": out.pattern != base.pattern,
            "pattern_color": out.pattern_color != base.pattern_color,
            "texture": out.frequency != base.frequency or out.angle != base.angle,
            "mark": out.mark != base.mark or out.mark_color != base.mark_color,
        }  # fmt: skip
        if groups is None or all(g in groups for g, c in changed.items() if c):
            return out
    raise ValueError(f"could not mutate within {groups}")


def render_pool(
    config: SynthConfig,
    out_dir: Path,
    instances: int,
    frames: int,
    alone: int = 0,
    groups: tuple[str, ...] | None = None,
    alone_scale: tuple[float, float] | None = None,
) -> list[PoolInstance]:
    """Render `instances` targets (each with `config.objects - 1` look-alikes) in `frames` poses each, as PNGs.

    `groups`: the appearance attributes a look-alike may differ in (`mutate_within`; None: any of the five).

    `alone` > 0 also renders, per object, that many frames showing it without its look-alikes (own random stream,
    so the shared frames do not change). `alone_scale` (min, max side fraction) renders those solo objects at their
    own size: large ones fill most of the frame, so pooling a whole support image already gives the object's
    features (a diagnostic that removes "find the box's region" from the task). `out_dir/pool.json` records the
    boxes; a later call with the same arguments reuses the frames.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "pool.json"
    key = {"config": repr(config), "instances": instances, "frames": frames, "alone": alone, "groups": groups,
           "alone_scale": alone_scale}  # fmt: skip
    solo_config = config if alone_scale is None else replace(config, objects=1, min_scale=alone_scale[0],
                                                             max_scale=alone_scale[1])  # fmt: skip
    if index.is_file():
        saved = json.loads(index.read_text())
        if saved["key"] == key:

            def frames_of(items: list[dict]) -> tuple[PoolFrame, ...]:
                return tuple(PoolFrame(out_dir / f["file"], tuple(Box(*b) for b in f["boxes"])) for f in items)

            return [
                PoolInstance(inst["shape"], frames_of(inst["frames"]), tuple(frames_of(a) for a in inst["alone"]))
                for inst in saved["instances"]
            ]
    backgrounds = BackgroundMaker()
    pool = []
    for i in range(instances):
        rng = np.random.default_rng([config.seed, i])
        shape = str(rng.choice(SHAPES))
        target = random_appearance(rng)
        lo, hi = config.mutations
        lookalikes = [
            mutate_within(target, rng, int(rng.integers(lo, hi + 1)), groups) for _ in range(config.objects - 1)
        ]
        rendered = []
        for j in range(frames):
            img, boxes = render_frame(config, shape, [target, *lookalikes], rng, backgrounds)
            path = out_dir / f"s{config.seed}_{i:06d}_{j}.png"
            _write_png(img, path)
            rendered.append(PoolFrame(path, tuple(boxes)))
        solo = []
        if alone:
            rng_alone = np.random.default_rng([config.seed, i, 1])
            for o, app in enumerate([target, *lookalikes]):
                own = []
                for j in range(alone):
                    img, boxes = render_frame(solo_config, shape, [app], rng_alone, backgrounds)
                    path = out_dir / f"s{config.seed}_{i:06d}_o{o}_{j}.png"
                    _write_png(img, path)
                    own.append(PoolFrame(path, tuple(boxes)))
                solo.append(tuple(own))
        pool.append(PoolInstance(shape, tuple(rendered), tuple(solo)))

    def rec(items: tuple[PoolFrame, ...]) -> list[dict]:
        return [{"file": f.path.name, "boxes": [b.as_list() for b in f.boxes]} for f in items]

    record = [{"shape": p.shape, "frames": rec(p.frames), "alone": [rec(a) for a in p.alone]} for p in pool]
    atomic_write_text(index, json.dumps({"key": key, "instances": record}))
    return pool


def _write_png(img: object, path: Path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # type: ignore[attr-defined]  # fast: scratch data
    atomic_write_bytes(path, buf.getvalue())


def sample_episodes(
    pool: list[PoolInstance],
    n: int,
    *,
    shots: tuple[int, int],
    seed: int,
    copy_rate: float = 0.0,
    prefix: str = "ep",
    distinct: bool = False,
    swap_roles: bool = False,
    clean_rate: float = 0.0,
    role: int | None = None,
) -> list[Episode]:
    """`n` episodes: an instance, then k in [shots] supports and one query drawn without replacement from its frames.

    `copy_rate`: fraction of "copy the support box" episodes whose query is one of their supports (a curriculum
    step: the answer is that support's box, found by matching whole frames, not instances).
    `role`: every episode's target is that object of the instance (0: the target, 1: its first look-alike), with the
    same frames as `role=None` gives (so `role=0` and `role=1` together are a position-balanced held-out set: the
    renderer places object 0 first, which leaves it nearer the centre on average, so a rule that ignores the
    supports and answers near the centre "picks" object 0 more often than half the time).
    """
    rng = random.Random(seed)
    role_fixed = role
    out = []
    for e in range(n):
        inst = pool[e % len(pool)] if distinct else pool[rng.randrange(len(pool))]
        k = rng.randint(*shots)
        order = rng.sample(range(len(inst.frames)), min(len(inst.frames), k + 1))
        sup = [inst.frames[j] for j in order[:k]]
        copy = rng.random() < copy_rate
        q = sup[rng.randrange(k)] if copy else inst.frames[order[k]]
        drawn = rng.randrange(len(q.boxes)) if swap_roles else 0
        role = drawn if role_fixed is None else role_fixed
        others = [b.as_list() for i, b in enumerate(q.boxes) if i != role]
        clean = bool(inst.alone) and not copy and rng.random() < clean_rate
        if clean:
            sup = rng.sample(inst.alone[role], min(k, len(inst.alone[role])))
            k = len(sup)
            role_box = 0  # the object alone: its only box
        else:
            role_box = role
        out.append(
            Episode(
                id=f"{prefix}-{e:06d}",
                supports=tuple(Support(f.path, f.boxes[role_box]) for f in sup),
                query_image=q.path,
                query_box=q.boxes[role],
                meta={"shape": inst.shape, "copy": copy, "clean": clean, "role": role, "query_distractors": others},
            )
        )
    return out


def write_pool_episodes(episodes: list[Episode], path: Path) -> Path:
    write_episodes(episodes, path)
    return path


def with_k(episodes: list[Episode], k: int) -> list[Episode]:
    return [replace(ep, supports=ep.supports[:k]) for ep in episodes]
