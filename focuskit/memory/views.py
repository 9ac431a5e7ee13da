"""View preparation: from a user's reference photo to what the memory stores and the vectors it embeds.

A view is downscaled and JPEG-encoded first, and the encoder sees exactly those stored pixels, so re-embedding the
stored image later reproduces the stored vectors. Each view is embedded as given plus its augmented variants
(mirrored, zoomed out; see `AugmentConfig`); views without a box or mask are boxed automatically (`autobox`).

A view with a mask (given, or made by a segmenter at add time) is embedded twice: its box variants (the box around
the mask), which the vector index searches, and its mask variants (`mask`, `mask-zoom2.5`, ...), kept out of the
index and used only to re-rank a detection's best candidates when a segmenter is on at query time. Box pooling
finds, the mask judges: on the real-photo episodes that was the one mask use that helped localization (mIoU
0.623 -> 0.663), while mask-pooled prototypes alone shrank the boxes found (0.406; docs/masks.md).

Sources are stored as file names (`cup.jpg`), never as paths, or as the caller's label ("upload", a path relative
to the photo library), so no server path leaks through the memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from focuskit.core.box import Box
from focuskit.core.errors import BoxError, ImageError, MemoryStoreError
from focuskit.core.image import ImageInput, load_image
from focuskit.matcher.region import RegionMatcher
from focuskit.memory.config import MemoryConfig
from focuskit.memory.results import ViewReport
from focuskit.models.encoders import Encoder, FeatureMap
from focuskit.models.proposals import Proposer
from focuskit.models.regions import MASK_PREFIX
from focuskit.models.segmenters import Segmenter


def is_mask_variant(variant: str) -> bool:
    return variant.startswith(MASK_PREFIX)


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
    """What the memory stores as a view's source: the file's name (no directories), or "upload" for pixels."""
    return Path(image).name if isinstance(image, (str, Path)) else "upload"


def display_source(stored: str) -> str:
    """A stored source as shown: memories written before sources were names may hold absolute paths; show the
    file name only (a relative label such as a library path or "upload" is shown as is)."""
    return Path(stored).name if Path(stored).is_absolute() else stored


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
        *,
        segmenter: Segmenter | None = None,
        sources: Sequence[str] | None = None,
    ) -> tuple[list[PreparedView], list[ViewReport]]:
        """Load, downscale, box and embed every view; unreadable or unboxable views are reported as skipped.

        `segmenter`: views without a mask get one from their box (`mask_for_box`), stored with the view.
        `sources`: the label stored per view (default: the file name, or "upload"). The progress bar counts the
        real work, one step per view for loading, encoding (the view and its variants) and segmenting, so it does
        not reach 100% before the encoder has run.
        """
        labels = [source_name(src, i) for i, src in enumerate(images)] if sources is None else list(sources)
        if len(labels) != len(images):
            raise MemoryStoreError(f"concept {name!r}: got {len(images)} images and {len(labels)} sources")
        steps = len(images) * (3 + int(segmenter is not None))
        with tqdm(total=steps, desc=f"views of {name}", disable=not progress, unit="step") as bar:
            loaded, unreadable = self._load(name, images, boxes, masks, labels, bar)
            return self._embed(name, loaded, unreadable, encoder, segmenter, bar)

    def _load(
        self,
        name: str,
        images: list[ImageInput],
        boxes: Sequence[Box | None] | None,
        masks: Sequence[np.ndarray | str | Path | None] | None,
        labels: list[str],
        bar: tqdm,
    ) -> tuple[list[_Loaded], list[ViewReport]]:
        loaded: list[_Loaded] = []
        unreadable: list[ViewReport] = []
        for i, src in enumerate(images):
            where = f"view {i + 1} of {name!r}"
            bar.update(1)
            try:
                original = load_image(src, what=where)
            except ImageError as exc:  # one bad photo out of several should not sink the others: report it
                unreadable.append(ViewReport(i, labels[i], "skipped", None, reason=str(exc)))
                bar.update(bar.total // max(1, len(images)) - 1)  # its encoding, embedding (and segmenting) steps
                continue
            img, scale, jpeg = self.stored_image(original)
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
                box.validate(original.size, where=f"{where}, {labels[i]}")
                box = box.clip(original.size).scale(scale)
            loaded.append(_Loaded(i, labels[i], img, scale, box, m, jpeg))
        return loaded, unreadable

    def _embed(
        self,
        name: str,
        loaded: list[_Loaded],
        unreadable: list[ViewReport],
        encoder: Encoder,
        segmenter: Segmenter | None,
        bar: tqdm,
    ) -> tuple[list[PreparedView], list[ViewReport]]:
        from focuskit.memory.autobox import pick_boxes

        fmaps: dict[int, FeatureMap] = {}
        for v in loaded:
            fmaps[v.index] = encoder.encode(v.image)
            bar.update(1)
        anchors = []
        for v in loaded:
            if v.mask is not None:
                anchors.append(fmaps[v.index].pool_boxes(mask_box(v.mask).to_array()[None])[0])
            elif v.box is not None:
                anchors.append(fmaps[v.index].pool_boxes(v.box.to_array()[None])[0])
        todo = [v for v in loaded if v.box is None and v.mask is None]
        picks = {}
        if todo:
            found = pick_boxes(
                [t.image for t in todo],
                [fmaps[t.index] for t in todo],
                self._proposer(),
                anchors=np.asarray(anchors, dtype=np.float32).reshape(-1, encoder.dim) if anchors else None,
                method=self.config.autobox,
            )
            picks = {t.index: f for t, f in zip(todo, found, strict=True)}
        prepared: list[PreparedView] = []
        reports: list[ViewReport] = list(unreadable)
        for v in loaded:
            how, score, box, m = ("mask" if v.mask is not None else "box"), None, v.box, v.mask
            if m is not None:
                box = mask_box(m)
            elif box is None:
                pick = picks.get(v.index)
                if pick is None:
                    bar.update(1 + int(segmenter is not None))  # its embedding and segmenting steps
                    reports.append(ViewReport(v.index, v.source, "skipped", None, reason="no object candidate found"))
                    continue
                box, how, score = pick.box, "auto", pick.score
            assert box is not None
            if segmenter is not None:
                if m is None:
                    m = np.asarray(segmenter.mask_for_box(v.image, box), dtype=bool)
                    m = m if m.any() else None
                bar.update(1)
            vectors = self.embed_view(encoder, v.image, box, m, fmaps[v.index])
            bar.update(1)
            prepared.append(PreparedView(v.index, v.source, how, score, v.image, box, m, v.scale, vectors, v.jpeg))
            reports.append(ViewReport(v.index, v.source, how, box.scale(1.0 / v.scale), score, masked=m is not None))
        return prepared, sorted(reports, key=lambda r: r.index)

    def embed_stored(
        self, encoder: Encoder, rows: Sequence[tuple[Any, ...]], *, progress: bool
    ) -> list[tuple[int, int, str, bytes]]:
        """Re-embed stored views: rows (id, concept_id, x1, y1, x2, y2, image, mask) -> vectors rows to insert."""
        out: list[tuple[int, int, str, bytes]] = []
        for vid, cid, x1, y1, x2, y2, img_blob, mask_blob in tqdm(
            rows, desc=f"re-embed with {encoder.name}", disable=not progress, unit="view"
        ):
            img = decode_image(img_blob, f"view {vid}")
            mask = None if mask_blob is None else decode_mask(mask_blob, "mask")
            for variant, vec in self.embed_view(encoder, img, Box(x1, y1, x2, y2), mask):
                out.append((int(vid), int(cid), variant, vec.astype(np.float32).tobytes()))
        return out

    def embed_view(
        self, encoder: Encoder, img: Image.Image, box: Box, mask: np.ndarray | None, fmap: FeatureMap | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """The view's box embedding plus its augmented variants (mirrored, zoomed out, rotated; re-embedded from a
        crop when small: `augment.crop_small_cells`), and with a mask the box variants pooled inside the mask (`mask`,
        `mask-hflip`, `mask-zoom2.5`: stored, not indexed). The shared matcher computes them, so a concept's stored
        views are the vectors `localize` would compute from the same photo and box."""
        matcher = RegionMatcher(self.config.augment.matcher_config(), encoder=encoder, concurrent=False)
        return matcher.many_view_variants(img, [box], [mask], fmap, mask_variants=True)[0]


@dataclass
class _Loaded:
    """A view after loading: index, stored source label, stored image, scale applied, box and mask in its pixels."""

    index: int
    source: str
    image: Image.Image
    scale: float
    box: Box | None
    mask: np.ndarray | None
    jpeg: bytes
