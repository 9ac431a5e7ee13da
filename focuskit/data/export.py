"""Write episodes out: focuskit's JSONL (one file per k) and Hugging Face `datasets` folders for training at scale.

`--max-side N` downscales every image whose longer side exceeds N, and scales every box that refers to it (the
supports' and the query's, and the distractor boxes in `meta`) by the same factors, so a 4K video frame becomes a
training-sized image without the boxes drifting. For JSONL the downscaled copies are written once into an image
folder shared by all k files (named by a hash of the source path and N); images already small enough are referenced
where they are. For `datasets` the image bytes are embedded, so the saved folder is self-contained; images whose
EXIF says "rotate me" are re-encoded upright, because focuskit's boxes are in upright pixels and `datasets` decodes
without applying EXIF.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.episode import Episode, ImageRef, Support
from focuskit.core.errors import ConfigError, DatasetError, ImageError
from focuskit.core.image import load_image
from focuskit.core.io import atomic_write_bytes
from focuskit.data.episodes_jsonl import write_episodes

_ORIENTATION_TAG = 0x0112


def output_paths(out: str | Path, shots: Sequence[int]) -> dict[int, Path]:
    """Where each k goes: `out` itself for one k, else `name.k1.jsonl`, `name.k2.jsonl`, ... beside it."""
    out = Path(out)
    if len(shots) == 1:
        return {shots[0]: out}
    return {k: out.with_name(f"{out.stem}.k{k}{out.suffix}") for k in shots}


def hf_output_dirs(out: str | Path, shots: Sequence[int]) -> dict[int, Path]:
    """`out` for one k, else `out/k1`, `out/k2`, ..."""
    out = Path(out)
    return {shots[0]: out} if len(shots) == 1 else {k: out / f"k{k}" for k in shots}


@dataclass(frozen=True)
class _Resized:
    path: Path
    scale: tuple[float, float]


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    w, h = size
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _encode(img: Image.Image, suffix: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    if suffix.lower() == ".png":
        img.save(buf, format="PNG")
        return buf.getvalue(), ".png"
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), ".jpg"


def _probe(path: Path) -> tuple[tuple[int, int], bool]:
    """(stored width, height) and whether the file needs no EXIF rotation, from the header only."""
    try:
        with Image.open(path) as img:
            return img.size, img.getexif().get(_ORIENTATION_TAG, 1) == 1
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None


def _file_ref(ref: ImageRef, episode_id: str) -> Path:
    if not isinstance(ref, (str, Path)):
        raise DatasetError(f"episode {episode_id!r}: only episodes whose images are files can be exported")
    return Path(ref)


class ImageShrinker:
    """Downscales images to `max_side` once each (cached by source path) and reports the box scale factors."""

    def __init__(self, max_side: int | None, image_dir: Path | None = None) -> None:
        if max_side is not None and max_side < 8:
            raise ConfigError(f"--max-side must be at least 8 pixels, got {max_side}")
        self.max_side = max_side
        self.image_dir = image_dir
        self._files: dict[Path, _Resized] = {}

    def _shrunk(self, img: Image.Image) -> Image.Image:
        """`img` itself when it fits, else a LANCZOS-downscaled copy whose longer side is `max_side`."""
        if self.max_side is None or max(img.size) <= self.max_side:
            return img
        return img.resize(_target_size(img.size, self.max_side), Image.Resampling.LANCZOS)

    def _fits(self, size: tuple[int, int]) -> bool:
        return self.max_side is None or max(size) <= self.max_side

    def file(self, path: Path) -> _Resized:
        """A path usable in JSONL: the original, or a downscaled copy in `image_dir`."""
        path = Path(path)
        if path not in self._files:
            size, _ = _probe(path)  # EXIF rotation does not change the longer side
            if self._fits(size):
                self._files[path] = _Resized(path, (1.0, 1.0))
            else:
                if self.image_dir is None:
                    raise ConfigError("an image folder is needed to write downscaled copies")
                img = load_image(path)
                new = self._shrunk(img)
                data, suffix = _encode(new, path.suffix)
                digest = hashlib.sha1(f"{path.resolve()}|{self.max_side}".encode()).hexdigest()[:16]
                target = self.image_dir / f"{path.stem[:40]}-{digest}{suffix}"
                if not target.exists():
                    atomic_write_bytes(target, data)
                self._files[path] = _Resized(target, (new.width / img.width, new.height / img.height))
        return self._files[path]

    def embedded(self, path: Path) -> tuple[dict[str, Any], tuple[float, float]]:
        """`{"bytes", "path"}` for a `datasets.Image` feature, and the box scale factors."""
        path = Path(path)
        size, upright = _probe(path)
        if upright and self._fits(size):
            return {"bytes": path.read_bytes(), "path": path.name}, (1.0, 1.0)
        img = load_image(path)
        new = self._shrunk(img)
        data, suffix = _encode(new, path.suffix)
        return {"bytes": data, "path": f"{path.stem}{suffix}"}, (new.width / img.width, new.height / img.height)


def _scale(box: Box, s: tuple[float, float]) -> Box:
    return box if s == (1.0, 1.0) else box.scale(s[0], s[1])


def _scale_boxes(boxes: list[list[float]], s: tuple[float, float]) -> list[list[float]]:
    return [_scale(Box.from_xyxy(b), s).as_list() for b in boxes]


def _scaled_meta(
    meta: dict[str, Any], support_scales: list[tuple[float, float]], query_scale: tuple[float, float]
) -> dict[str, Any]:
    if "distractors" not in meta:
        return meta
    d = meta["distractors"]
    return {
        **meta,
        "distractors": {
            "supports": [_scale_boxes(b, s) for b, s in zip(d.get("supports", []), support_scales, strict=False)],
            "query": _scale_boxes(d.get("query", []), query_scale),
        },
    }


def shrink_episode(episode: Episode, shrinker: ImageShrinker) -> Episode:
    """The episode with images downscaled to the shrinker's `max_side` and every box scaled to match."""
    if shrinker.max_side is None:
        return episode
    sup = [shrinker.file(_file_ref(s.image, episode.id)) for s in episode.supports]
    q = shrinker.file(_file_ref(episode.query_image, episode.id))
    return replace(
        episode,
        supports=tuple(Support(r.path, _scale(s.box, r.scale)) for s, r in zip(episode.supports, sup, strict=True)),
        query_image=q.path,
        query_box=None if episode.query_box is None else _scale(episode.query_box, q.scale),
        meta=_scaled_meta(episode.meta, [r.scale for r in sup], q.scale),
    )


def write_jsonl(
    episodes: Sequence[Episode],
    path: str | Path,
    *,
    max_side: int | None = None,
    image_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    shrinker: ImageShrinker | None = None,
) -> int:
    """Write episodes (the first `limit`) to a JSONL file, downscaled if `max_side` is given. Returns the count.

    Downscaled copies go to `image_dir` (default: `<file stem>_images/` beside the file); pass one `shrinker` to
    several calls to resize each image only once across files.
    """
    path = Path(path)
    if shrinker is None:
        shrinker = ImageShrinker(max_side, Path(image_dir) if image_dir else path.with_name(f"{path.stem}_images"))
    chosen = list(episodes[:limit] if limit is not None else episodes)
    bar = tqdm(chosen, desc=f"write {path.name}", unit="ep", disable=not progress)
    return write_episodes((shrink_episode(ep, shrinker) for ep in bar), path)


def _hf_features() -> Any:
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "k": Value("int32"),
            "support_images": List(Image()),
            "support_boxes": List(List(Value("float32"), length=4)),
            "query_image": Image(),
            "query_box": List(Value("float32"), length=4),
            "meta": Value("string"),
        }
    )


def _hf_rows(episodes: Sequence[Episode], shrinker: ImageShrinker, progress: bool) -> Iterator[dict[str, Any]]:
    for ep in tqdm(episodes, desc="encode images", unit="ep", disable=not progress):
        images, boxes, scales = [], [], []
        for s in ep.supports:
            img, scale = shrinker.embedded(_file_ref(s.image, ep.id))
            images.append(img)
            boxes.append(_scale(s.box, scale).as_list(None))
            scales.append(scale)
        qimg, qscale = shrinker.embedded(_file_ref(ep.query_image, ep.id))
        yield {
            "id": ep.id,
            "k": ep.k,
            "support_images": images,
            "support_boxes": boxes,
            "query_image": qimg,
            "query_box": None if ep.query_box is None else _scale(ep.query_box, qscale).as_list(None),
            "meta": json.dumps(_scaled_meta(ep.meta, scales, qscale)),
        }


def write_hf_dataset(
    episodes: Sequence[Episode],
    out_dir: str | Path,
    *,
    max_side: int | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> int:
    """Save episodes as a `datasets.Dataset` (`save_to_disk`) with embedded images. Returns the row count.

    Columns: id, k, support_images (list of Image), support_boxes (k x 4, xyxy pixels of the stored images),
    query_image, query_box (4 floats or null when the target is absent), meta (JSON string).
    Load with `datasets.load_from_disk(out_dir)`.
    """
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    out_dir = Path(out_dir)
    chosen = list(episodes[:limit] if limit is not None else episodes)
    if not chosen:
        raise DatasetError(f"no episodes to write to {out_dir}")
    for ep in chosen:
        for ref in (*(s.image for s in ep.supports), ep.query_image):
            _file_ref(ref, ep.id)
    if out_dir.exists() and not (out_dir / "state.json").is_file():
        raise DatasetError(
            f"{out_dir} exists and is not a saved `datasets` folder (no state.json); refusing to replace it, "
            "choose a new --hf-out path"
        )
    shrinker = ImageShrinker(max_side)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    bars_were_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        return _save_hf(Dataset, chosen, shrinker, out_dir, progress)
    finally:
        if not progress and not bars_were_disabled:
            enable_progress_bars()


def _save_hf(dataset_cls: Any, chosen: list[Episode], shrinker: ImageShrinker, out_dir: Path, progress: bool) -> int:
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        ds = dataset_cls.from_generator(
            _hf_rows,
            features=_hf_features(),
            cache_dir=os.path.join(tmp, "cache"),
            gen_kwargs={"episodes": chosen, "shrinker": shrinker, "progress": progress},
            fingerprint=uuid.uuid4().hex,
        )
        staged = Path(tmp) / "dataset"
        ds.save_to_disk(str(staged))
        n = len(ds)
        del ds
        if out_dir.exists():  # a previous save of ours (checked above)
            shutil.rmtree(out_dir)
        os.replace(staged, out_dir)
    return n
