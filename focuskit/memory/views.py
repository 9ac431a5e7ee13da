"""View preparation: from a user's reference photo to what the memory stores and the vectors it embeds.

A view is downscaled and JPEG-encoded first, and the encoder sees exactly those stored pixels, so re-embedding the
stored image later reproduces the stored vectors. Each view is embedded as given plus its augmented variants
(mirrored, zoomed out; see `AugmentConfig`); views without a box or mask are boxed automatically (`autobox`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.errors import BoxError, ImageError, MemoryStoreError
from focuskit.core.image import ImageInput, load_image
from focuskit.matcher.region import zoom_out
from focuskit.memory.config import MemoryConfig
from focuskit.memory.results import ViewReport
from focuskit.models.encoders import Encoder, FeatureMap
from focuskit.models.proposals import Proposer


@dataclass
class PreparedView:
    index: int
    source: str
    how: str
    score: float | None
    image: Image.Image
    box: Box
    mask: np.ndarray | None
    scale: float
    vectors: list[tuple[str, np.ndarray]]
    jpeg: bytes
    """The stored image bytes: exactly the pixels that were embedded."""


# --- codecs and small helpers -----------------------------------------------------------------------------------
def encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format=fmt)
    return buf.getvalue()


def decode_image(data: bytes, where: str) -> Image.Image:
    try:
        return load_image(data, what=where)
    except ImageError as exc:
        raise MemoryStoreError(f"memory is corrupt: {exc}") from None


def decode_mask(data: bytes, where: str) -> np.ndarray:
    return np.asarray(decode_image(data, where).convert("L")) > 0


def source_name(image: ImageInput, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i + 1}"


def load_mask(mask: np.ndarray | str | Path, size: tuple[int, int], where: str) -> np.ndarray:
    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise ImageError(f"mask not found: {path} ({where})")
        with Image.open(path) as m:
            arr = np.asarray(m.convert("L")) > 0
    else:
        arr = np.asarray(mask).astype(bool)
    if arr.shape != (size[1], size[0]):
        raise ImageError(f"mask of {where} is {arr.shape[1]}x{arr.shape[0]}, the image is {size[0]}x{size[1]}")
    if not arr.any():
        raise ImageError(f"mask of {where} is empty")
    return arr


def mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


# --- preparation ------------------------------------------------------------------------------------------------
class ViewPreparer:
    """Turns reference images (+ box / mask / nothing) into `PreparedView`s with the memory's settings."""

    def __init__(self, config: MemoryConfig, proposer: Callable[[], Proposer]) -> None:
        self.config = config
        self._proposer = proposer
        """A callable, so the proposal network is built only when a view comes without a box."""

    def stored_image(self, img: Image.Image) -> tuple[Image.Image, float, bytes]:
        """The view as it will be stored (downscaled, JPEG round trip), the scale applied, and the JPEG bytes."""
        side = self.config.view_max_side
        scale = min(1.0, side / max(img.size))
        if scale < 1.0:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
        # Embed exactly the pixels that will be stored, so re-embedding later reproduces these vectors.
        data = encode_image(img, "JPEG", self.config.jpeg_quality)
        return load_image(data), scale, data

    def thumbnail(self, image: Image.Image, box: Box) -> bytes:
        thumb = image.crop(tuple(round(v) for v in box.to_xyxy()))
        thumb.thumbnail((self.config.thumbnail_side, self.config.thumbnail_side))
        return encode_image(thumb, "JPEG", self.config.jpeg_quality)

    def mask_png(self, mask: np.ndarray | None) -> bytes | None:
        if mask is None:
            return None
        return encode_image(Image.fromarray(mask.astype(np.uint8) * 255), "PNG", self.config.jpeg_quality)

    def prepare(
        self,
        name: str,
        images: list[ImageInput],
        boxes: Sequence[Box | None] | None,
        masks: Sequence[np.ndarray | str | Path | None] | None,
        encoder: Encoder,
        progress: bool,
    ) -> tuple[list[PreparedView], list[ViewReport]]:
        """Load, downscale, box and embed every view; unreadable or unboxable views are reported as skipped."""
        from focuskit.memory.autobox import pick_boxes

        loaded: list[tuple[int, str, Image.Image, float, Box | None, np.ndarray | None]] = []
        jpegs: dict[int, bytes] = {}
        unreadable: list[ViewReport] = []
        for i, src in enumerate(tqdm(images, desc=f"views of {name}", disable=not progress, unit="view")):
            where = f"view {i + 1} of {name!r}"
            try:
                original = load_image(src, what=where)
            except ImageError as exc:  # one bad photo out of several should not sink the others: report it
                unreadable.append(ViewReport(i, source_name(src, i), "skipped", None, reason=str(exc)))
                continue
            img, scale, jpegs[i] = self.stored_image(original)
            box = boxes[i] if boxes is not None else None
            mask = masks[i] if masks is not None else None
            m = None
            if mask is not None:
                full = load_mask(mask, original.size, where)
                m = np.asarray(Image.fromarray(full).resize(img.size, Image.NEAREST)) > 0
                if not m.any():
                    raise ImageError(f"mask of {where} vanishes when the view is downscaled to {img.size}")
            if box is not None:
                if not isinstance(box, Box):
                    raise BoxError(f"{where}: expected a Box, got {type(box).__name__}")
                box.validate(original.size, where=f"{where}, {source_name(src, i)}")
                box = box.clip(original.size).scale(scale)
            loaded.append((i, source_name(src, i), img, scale, box, m))
        fmaps: dict[int, FeatureMap] = {i: encoder.encode(img) for i, _, img, _, _, _ in loaded}
        anchors = []
        for i, _, _img, _, box, m in loaded:
            if m is not None:
                anchors.append(fmaps[i].pool_masks(m[None])[0])
            elif box is not None:
                anchors.append(fmaps[i].pool_boxes(box.to_array()[None])[0])
        todo = [item for item in loaded if item[4] is None and item[5] is None]
        picks = {}
        if todo:
            found = pick_boxes(
                [t[2] for t in todo],
                [fmaps[t[0]] for t in todo],
                self._proposer(),
                anchors=np.asarray(anchors, dtype=np.float32).reshape(-1, encoder.dim) if anchors else None,
            )
            picks = {t[0]: f for t, f in zip(todo, found, strict=True)}
        prepared: list[PreparedView] = []
        reports: list[ViewReport] = list(unreadable)
        for i, source, img, scale, box, m in loaded:
            how, score = ("mask" if m is not None else "box"), None
            if m is not None:
                box = mask_box(m)
            elif box is None:
                pick = picks.get(i)
                if pick is None:
                    reports.append(ViewReport(i, source, "skipped", None, reason="no object candidate found"))
                    continue
                box, how, score = pick.box, "auto", pick.score
            assert box is not None
            vectors = self.embed_view(encoder, img, box, m, fmaps[i])
            prepared.append(PreparedView(i, source, how, score, img, box, m, scale, vectors, jpegs[i]))
            reports.append(ViewReport(i, source, how, box.scale(1.0 / scale), score))
        return prepared, sorted(reports, key=lambda r: r.index)

    def embed_view(
        self, encoder: Encoder, img: Image.Image, box: Box, mask: np.ndarray | None, fmap: FeatureMap | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """The view's embedding plus its augmented variants (mirrored, zoomed out)."""

        def pooled(fm: FeatureMap, b: Box, m: np.ndarray | None) -> np.ndarray:
            return fm.pool_masks(m[None])[0] if m is not None else fm.pool_boxes(b.to_array()[None])[0]

        fmap = fmap or encoder.encode(img)
        out = [("original", pooled(fmap, box, mask))]
        aug = self.config.augment
        if aug.hflip:
            w = img.width
            fb = Box(w - box.x2, box.y1, w - box.x1, box.y2)
            fm_ = None if mask is None else mask[:, ::-1].copy()
            out.append(("hflip", pooled(encoder.encode(ImageOps.mirror(img)), fb, fm_)))
        for f in aug.zoom_out:
            canvas, left, top = zoom_out(img, f)
            zb = Box(box.x1 + left, box.y1 + top, box.x2 + left, box.y2 + top)
            zm = None
            if mask is not None:
                zm = np.zeros((canvas.height, canvas.width), dtype=bool)
                zm[top : top + img.height, left : left + img.width] = mask
            out.append((f"zoom{f:g}", pooled(encoder.encode(canvas), zb, zm)))
        return out
