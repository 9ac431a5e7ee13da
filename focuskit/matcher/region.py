"""`RegionMatcher`: proposals, region embeddings, support-view embeddings and scoring, in one place.

A region's embedding is the encoder's feature map averaged inside its box (`FeatureMap.pool_boxes`), one unit
vector per region, so the same vectors can be computed on the fly (`localize`), stored per concept view (the
memory) or stored per photo proposal (the library). A support view is embedded as it is, mirrored and zoomed out
(`views`); a region's score is its best cosine over a concept's views, and the region with the best score wins when
it reaches `tau`.

The surfaces call the same three steps, so the same supports and the same photo give the same box and score:

    matcher = RegionMatcher()
    views = matcher.support_views(supports)           # (V, C): what the memory stores for a concept
    boxes, emb = matcher.regions(image)               # (N, 4), (N, C): what the library stores for a photo
    scores, view = matcher.score(emb, views)          # best cosine over views per region
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from focuskit.core.box import Box, nms
from focuskit.core.episode import Support
from focuskit.core.image import load_image
from focuskit.matcher.config import MatcherConfig, tau_for
from focuskit.models.encoders import Encoder, FeatureMap, create_encoder
from focuskit.models.proposals import Proposer, create_proposer
from focuskit.models.regions import CROP_VARIANT, MASK_PREFIX, crop_variants, refine_small_regions


def zoom_out(image: Image.Image, factor: float) -> tuple[Image.Image, int, int]:
    """The image placed by reflection padding at the center of a canvas `factor` times larger; returns its offset."""
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    ch, cw = round(h * factor), round(w * factor)
    top, left = (ch - h) // 2, (cw - w) // 2
    # np.pad "reflect" cannot pad more than the array's size at once; "symmetric" tiling via wrap of a mirror does.
    mirrored = np.concatenate([arr, arr[:, ::-1]], axis=1)
    mirrored = np.concatenate([mirrored, mirrored[::-1]], axis=0)
    reps_y, reps_x = -(-(ch + 2 * h) // (2 * h)), -(-(cw + 2 * w) // (2 * w))
    tiled = np.tile(mirrored, (reps_y + 1, reps_x + 1, 1))
    oy, ox = 2 * h - top % (2 * h), 2 * w - left % (2 * w)
    canvas = tiled[oy : oy + ch, ox : ox + cw].copy()
    canvas[top : top + h, left : left + w] = arr
    return Image.fromarray(canvas), left, top


def _rotated_box(b: Box, angle: int, size: tuple[int, int]) -> Box:
    """`b` in the image rotated counter-clockwise by `angle` (90, 180 or 270) degrees with `Image.rotate(expand)`."""
    w, h = size
    if angle == 90:
        return Box(b.y1, w - b.x2, b.y2, w - b.x1)
    if angle == 180:
        return Box(w - b.x2, h - b.y2, w - b.x1, h - b.y1)
    return Box(h - b.y2, b.x1, h - b.y1, b.x2)


class RegionMatcher:
    """Proposals + region embeddings + scoring of one `MatcherConfig`.

    `encoder` may be given built or as a zero-argument factory (built on first use: a library search never needs
    it); `proposers` built, otherwise created from the config on first use.
    """

    def __init__(
        self,
        config: MatcherConfig | None = None,
        *,
        encoder: Encoder | Callable[[], Encoder] | None = None,
        proposers: Sequence[Proposer] | None = None,
        concurrent: bool = True,
    ) -> None:
        self.config = config or MatcherConfig()
        self._encoder = encoder
        self._proposers = list(proposers) if proposers is not None else None
        self.concurrent = concurrent
        """Run the proposers in a worker thread while the encoder runs (both release the GIL in native code)."""
        self._pool: ThreadPoolExecutor | None = None

    # --- parts ------------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is not None and not hasattr(self._encoder, "encode"):
            self._encoder = self._encoder()  # type: ignore[operator]
        if self._encoder is None:
            self._encoder = create_encoder(self.config.encoder, **self.config.encoder_options)
        return self._encoder  # type: ignore[return-value]

    @property
    def proposers(self) -> list[Proposer]:
        if self._proposers is None:
            opts = self.config.proposer_options
            self._proposers = [create_proposer(name, **opts.get(name, {})) for name in self.config.proposers]
        return self._proposers

    @property
    def tag(self) -> str:
        """The encoder tag every embedding of this matcher carries."""
        return str(self.encoder.name)

    @property
    def tau(self) -> float:
        """The absent threshold in use: the config's, or the one measured for the encoder tag."""
        return self.config.tau if self.config.tau is not None else tau_for(self.tag)

    def tau_for_tag(self, tag: str) -> float:
        """Like `tau`, for embeddings made by another encoder (a library or memory built earlier)."""
        return self.config.tau if self.config.tau is not None else tau_for(tag)

    # --- query side -------------------------------------------------------------------------------------------
    def propose(self, image: Image.Image) -> np.ndarray:
        """(N, 4) boxes, N <= max_proposals: the whole image, then an equal share of each proposer's boxes (in its
        own order, the detector's best first), then their leftovers; near-duplicates (IoU > 0.9) merged.

        Shares matter: the SSD detector alone returns ~100 boxes on most photos, which would crowd out the windows
        that cover objects no COCO class describes.
        """
        return self.propose_labeled(image)[0]

    def propose_labeled(self, image: Image.Image) -> tuple[np.ndarray, list[str]]:
        """`propose`, with the source of each box ('whole' or a proposer name)."""
        width, height = image.size
        sources, names = [], []
        for name, proposer in zip(self.config.proposers, self.proposers, strict=False):
            b = np.clip(np.asarray(proposer.propose(image), dtype=np.float64).reshape(-1, 4), 0, [width, height] * 2)
            sources.append(b[((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)])
            names.append(name)
        share = -(-(self.config.max_proposals - int(self.config.whole_image)) // len(sources))
        whole = np.array([[0.0, 0.0, width, height]]) if self.config.whole_image else np.zeros((0, 4))
        parts = [whole] + [s[:share] for s in sources] + [s[share:] for s in sources]
        labels = ["whole"] * len(whole) + [
            n for n, s in zip(names, sources, strict=True) for _ in range(len(s[:share]))
        ]
        labels += [n for n, s in zip(names, sources, strict=True) for _ in range(len(s[share:]))]
        boxes = np.concatenate(parts, 0)
        # Rank = position, so among near-duplicates the earlier one (whole image, then shares) is kept.
        keep = np.sort(nms(boxes, -np.arange(len(boxes), dtype=np.float64), 0.9))[: self.config.max_proposals]
        return boxes[keep], [labels[i] for i in keep]

    def embed_regions(self, fmap: FeatureMap, boxes: np.ndarray) -> np.ndarray:
        """(N, C) unit region embeddings of (N, 4) pixel boxes."""
        return fmap.pool_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))

    def refine_small(
        self, image: Image.Image, fmap: FeatureMap, boxes: np.ndarray, embeddings: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        """`embeddings` with the best-scored small regions re-embedded from crops (`config.crop_small_cells`; the
        same array when off or when none is small): the caller re-scores them with its own scorer."""
        return refine_small_regions(
            self.encoder, image, fmap, boxes, embeddings, scores, min_cells=self.config.crop_small_cells
        )[0]

    def encode_and_propose(self, image: Image.Image) -> tuple[FeatureMap, np.ndarray, list[str]]:
        """The image's feature map, its proposals and their sources, the encoder and the proposers run concurrently
        when `concurrent` (they are independent; both spend their time in native code that releases the GIL)."""
        if not self.concurrent:
            return (self.encoder.encode(image), *self.propose_labeled(image))
        encoder, _ = self.encoder, self.proposers  # build both here, not racing in two threads
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="focuskit-propose")
        proposed = self._pool.submit(self.propose_labeled, image)
        fmap = encoder.encode(image)
        boxes, labels = proposed.result()
        return fmap, boxes, labels

    def regions(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """Proposals (N, 4) float64 pixels and their embeddings (N, C) of one image."""
        fmap, boxes, _ = self.encode_and_propose(image)
        return boxes, self.embed_regions(fmap, boxes)

    # --- support side -----------------------------------------------------------------------------------------
    def view_variants(
        self, image: Image.Image, box: Box, mask: np.ndarray | None = None, fmap: FeatureMap | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """A support view's embedding plus its augmented variants: [('original', (C,)), ('hflip', ...), ('zoom2.5',
        ...)]. `mask` (H, W) bool, when given, is pooled instead of the box."""
        return self.many_view_variants(image, [box], [mask], fmap)[0]

    def many_view_variants(
        self,
        image: Image.Image,
        boxes: Sequence[Box],
        masks: Sequence[np.ndarray | None] | None = None,
        fmap: FeatureMap | None = None,
        *,
        mask_variants: bool = False,
    ) -> list[list[tuple[str, np.ndarray]]]:
        """`view_variants` of several views on one image: each variant image (mirrored, zoomed) is encoded once.

        `mask_variants`: a view's mask is not pooled in place of its box; the box variants stay box-pooled and the
        mask-pooled ones follow them under their own names (`MASK_PREFIX`, `mask-hflip`, `mask-zoom2.5`), from the
        same encoded images. That is what the concept memory stores for a masked view (`memory.views`).
        """
        encoder = self.encoder
        masks = list(masks) if masks is not None else [None] * len(boxes)
        out: list[list[tuple[str, np.ndarray]]] = [[] for _ in boxes]
        extra: list[list[tuple[str, np.ndarray]]] = [[] for _ in boxes]  # mask-pooled variants, after the box ones

        def add(i: int, variant: str, fm: FeatureMap, b: Box, m: np.ndarray | None) -> None:
            if m is None or mask_variants:
                out[i].append((variant, fm.pool_boxes(b.to_array()[None])[0]))
            else:
                out[i].append((variant, fm.pool_masks(m[None])[0]))
            if m is not None and mask_variants:
                label = MASK_PREFIX if variant == "original" else f"{MASK_PREFIX}-{variant}"
                extra[i].append((label, fm.pool_masks(np.ascontiguousarray(m)[None])[0]))

        fmap = fmap or encoder.encode(image)
        for i, (b, m) in enumerate(zip(boxes, masks, strict=True)):
            add(i, "original", fmap, b, m)
        if self.config.hflip:
            w = image.width
            flipped = encoder.encode(ImageOps.mirror(image))
            for i, (b, m) in enumerate(zip(boxes, masks, strict=True)):
                fb = Box(w - b.x2, b.y1, w - b.x1, b.y2)
                add(i, "hflip", flipped, fb, None if m is None else m[:, ::-1].copy())
        for f in self.config.zoom_out:
            canvas, left, top = zoom_out(image, f)
            zoomed = encoder.encode(canvas)
            for i, (b, m) in enumerate(zip(boxes, masks, strict=True)):
                zb = Box(b.x1 + left, b.y1 + top, b.x2 + left, b.y2 + top)
                zm = None
                if m is not None:
                    zm = np.zeros((canvas.height, canvas.width), dtype=bool)
                    zm[top : top + image.height, left : left + image.width] = m
                add(i, f"zoom{f:g}", zoomed, zb, zm)
        for angle in self.config.rotate:
            turned = encoder.encode(image.rotate(angle, expand=True))  # exact: multiples of 90 degrees
            for i, b in enumerate(boxes):
                add(i, f"rot{angle}", turned, _rotated_box(b, angle, image.size), None)
        if self.config.crop_small_cells > 0:
            crops = crop_variants(encoder, image, np.stack([b.to_array() for b in boxes]).reshape(-1, 4), fmap,
                                  min_cells=self.config.crop_small_cells)  # fmt: skip
            for views, c in zip(out, crops, strict=True):
                if c is not None:
                    views.append((CROP_VARIANT, c))
        return [views + masked for views, masked in zip(out, extra, strict=True)]

    def support_views(self, supports: Sequence[Support]) -> np.ndarray:
        """(V, C) embeddings of all supports' views and variants, in support order (what the memory stores)."""
        out = []
        for i, s in enumerate(supports):
            img = load_image(s.image, what=f"support image {i + 1}")
            out.extend(v for _, v in self.view_variants(img, s.box.clip(img.size)))
        return np.stack(out).astype(np.float32)

    # --- scoring ----------------------------------------------------------------------------------------------
    @staticmethod
    def score(embeddings: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per region, the best cosine over `views` (V, C) and the index of that view: (N,), (N,)."""
        if len(embeddings) == 0 or len(views) == 0:
            return np.full(len(embeddings), -np.inf, np.float32), np.zeros(len(embeddings), np.int64)
        cos = np.asarray(embeddings, np.float32) @ np.asarray(views, np.float32).T
        best = cos.argmax(1)
        return cos[np.arange(len(cos)), best], best

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:  # picklable for process pools: the thread pool is rebuilt on use
        state = dict(self.__dict__)
        state["_pool"] = None
        return state
