"""PerMIRS reader: three frames per video of one instance among same-category look-alikes (from BURST/TAO).

Layout (as read by the PDM code, "Where's Waldo: Diffusion Features for Personalized Segmentation and Retrieval",
Samuel et al., NeurIPS 2024, scripts `PerMIRS/*` and `perdiff_*`)::

    <root>/<video_id>/0.jpg, 1.jpg, 2.jpg          the three frames the benchmark picked from the video
    <root>/<video_id>/masks.npz.npy                pickled object array: one {track_id: (H, W) mask} dict per frame
    <root>/<video_id>/diff_feats.pt                cached diffusion features (ignored here)

The first entry of each frame's dict is the target instance (PDM reads `list(masks[f].values())[0]`); further
entries, if a file has them, become distractor tracks. Only the target is annotated in the public release, so the
look-alike instances are in the pixels but not in the metadata. PDM's segmentation protocol takes frame 0 as the
reference and frame 1 as the target, so sequences carry `query_index=1`: the 1-shot episode is exactly (0 -> 1),
the 2-shot one uses frames 0 and 2 as supports. 4-shot episodes cannot be built (3 frames) and are counted as skipped.

`masks.npz.npy` is a pickle. It is read with an unpickler that only admits numpy arrays, dtypes and plain Python
containers, so a tampered file raises a `DatasetError` instead of running code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.perseg import box_from_mask
from focuskit.data.sequences import DataReport, SequenceInfo, Track, TrackSequence, list_images

MASKS_FILE = "masks.npz.npy"
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_mask_file(path: Path) -> list[Any]:
    """Per-frame masks from a PerMIRS `masks.npz.npy`: a list of {track_id: mask} dicts (or plain masks)."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject:
                data = _NumpyOnlyUnpickler(fh).load()
            else:
                fh.seek(0)
                data = np.load(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise DatasetError(f"{path}: not a PerMIRS mask file (numpy array of per-frame mask dicts): {exc}") from None
    return list(data)


class PermirsDataset:
    """The PerMIRS videos under `root`. See the module docstring for the layout and the episode protocol."""

    format_name = "permirs"

    def __init__(self, root: str | Path, split: str = "all") -> None:
        self.root = Path(root)
        self.split = split
        self.report = DataReport()
        if split != "all":
            raise DatasetError(f"PerMIRS has one split, 'all'; got {split!r}")
        if not self.root.is_dir():
            raise DatasetError(f"PerMIRS root not found: {self.root}")
        self._dirs = {p.name: p for p in sorted(self.root.iterdir()) if p.is_dir() and (p / MASKS_FILE).is_file()}
        if not self._dirs:
            raise DatasetError(
                f"{self.root} is not a PerMIRS root: expected files like {self.root}/<video_id>/{MASKS_FILE} "
                "next to 0.jpg, 1.jpg, 2.jpg; found none"
            )

    def index(self) -> list[SequenceInfo]:
        return [SequenceInfo(name) for name in sorted(self._dirs)]

    def load(self, name: str) -> TrackSequence | None:
        video_dir = self._dirs.get(name)
        if video_dir is None:
            self.report.add("missing_sequence", name)
            return None
        frames = sorted(
            list_images(video_dir), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name)
        )
        masks = load_mask_file(video_dir / MASKS_FILE)
        if len(masks) != len(frames):
            self.report.add("mask_frame_count_mismatch", f"{video_dir} ({len(masks)} masks, {len(frames)} frames)")
            n = min(len(masks), len(frames))
            frames, masks = frames[:n], masks[:n]
        if not frames:
            self.report.add("sequence_without_frames", str(video_dir))
            return None
        target_boxes: list[Box | None] = []
        others: dict[str, list[Box | None]] = {}
        sizes: list[tuple[int, int]] = []
        for f, entry in enumerate(masks):
            items = list(entry.items()) if isinstance(entry, dict) else [("target", entry)]
            if not items:
                self.report.add("empty_mask", f"{video_dir / MASKS_FILE} frame {f}")
                target_boxes.append(None)
                sizes.append((0, 0))
                continue
            arrays = [(str(k), np.asarray(m)) for k, m in items]
            h, w = arrays[0][1].shape[:2]
            sizes.append((int(w), int(h)))
            box = box_from_mask(arrays[0][1])
            if box is None:
                self.report.add("empty_mask", f"{video_dir / MASKS_FILE} frame {f}")
            target_boxes.append(box)
            for tid, m in arrays[1:]:
                others.setdefault(tid, [None] * len(masks))[f] = box_from_mask(m)
        distractors = tuple(Track(tid, tuple(b)) for tid, b in sorted(others.items()))
        return TrackSequence(
            name=name,
            frames=tuple(frames),
            boxes=tuple(target_boxes),
            visible=tuple(b is not None for b in target_boxes),
            distractors=distractors,
            frame_sizes=None if any(s == (0, 0) for s in sizes) else tuple(sizes),
            query_index=1 if len(frames) >= 2 else None,
            meta={"split": self.split},
        )
