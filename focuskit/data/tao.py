"""TAO reader (multi-object videos; the target is each video's most frequent track).

Layout (TAO toolkit, github.com/TAO-Dataset/tao `docs/download.md` and the annotation schema documented in
`tao/toolkit/tao/tao.py`)::

    <root>/annotations/train.json | validation.json | test.json
    <root>/frames/<image file_name>          e.g. frames/train/YFCC100M/v_f69e.../frame0391.jpg

The annotation JSON is COCO-style with video and track tables::

    {"videos": [{"id", "name", "width", "height", ...}],
     "images": [{"id", "video_id", "file_name", "width", "height", "frame_index"}],
     "tracks": [{"id", "category_id", "video_id"}],
     "annotations": [{"id", "image_id", "track_id", "bbox": [x, y, w, h], "category_id", ...}],
     "categories": [{"id", "name", ...}]}

Only annotated frames are listed in `images` (about one per second), and those are the frames a sequence has.
Following the FOCUS paper, each video's target is the track annotated in the most frames (ties: larger mean box,
then lower track id); every other track is a distractor, kept per frame in `TrackSequence.distractors` and written to
the episode's metadata. TAO has no occlusion flags: a frame where the target track has no box is "not visible".
`root` may also be the annotation file itself, with frames under `<file>/../../frames`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.data.sequences import DataReport, SequenceInfo, Track, TrackSequence

SPLITS = ("train", "val", "test")
_SPLIT_FILES = {"train": "train.json", "val": "validation.json", "test": "test.json"}
_REQUIRED_KEYS = ("videos", "images", "tracks", "annotations")


def _bbox(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return [x, y, w, h]


class TaoDataset:
    """The videos of one TAO split. See the module docstring for the layout and the choice of target."""

    format_name = "tao"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.report = DataReport()
        if self.root.is_file():
            self.annotation_path = self.root
            self.frames_dir = self.root.parent.parent / "frames"
        else:
            if split not in SPLITS:
                raise DatasetError(f"TAO split must be one of {', '.join(SPLITS)}, got {split!r}")
            self.annotation_path = self.root / "annotations" / _SPLIT_FILES[split]
            self.frames_dir = self.root / "frames"
            if not self.annotation_path.is_file():
                raise DatasetError(
                    f"{self.root} is not a TAO root: expected file {self.annotation_path} is missing "
                    "(layout: <root>/annotations/{train,validation,test}.json and <root>/frames/<file_name>)"
                )
        self._load_json()

    def _load_json(self) -> None:
        path = self.annotation_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: a TAO annotation file is a JSON object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED_KEYS if not isinstance(data.get(k), list)]
        if missing:
            raise DatasetError(
                f"{path}: not a TAO annotation file: missing list(s) {', '.join(repr(k) for k in missing)} "
                f"(expected keys {', '.join(_REQUIRED_KEYS)}, categories)"
            )
        if not data["annotations"]:
            raise DatasetError(f"{path}: has no annotations (TAO's test_without_annotations.json cannot make episodes)")
        self._categories = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", []) if "id" in c}
        self._videos = {v["id"]: v for v in data["videos"] if "id" in v}
        self._images: dict[Any, dict[str, Any]] = {}
        self._video_images: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for img in data["images"]:
            if "id" not in img or "video_id" not in img or "file_name" not in img:
                self.report.add("malformed_image_entry", str(img)[:80])
                continue
            self._images[img["id"]] = img
            self._video_images[img["video_id"]].append(img)
        for imgs in self._video_images.values():
            imgs.sort(key=lambda im: (im.get("frame_index", 0), str(im["file_name"])))
        self._tracks = {t["id"]: t for t in data["tracks"] if "id" in t}
        # track id -> {image id: bbox xywh}
        self._track_boxes: dict[Any, dict[Any, list[float]]] = defaultdict(dict)
        for ann in data["annotations"]:
            img = self._images.get(ann.get("image_id"))
            track = self._tracks.get(ann.get("track_id"))
            if img is None or track is None:
                self.report.add("dangling_annotation", f"annotation {ann.get('id')}")
                continue
            box = _bbox(ann.get("bbox"))
            if box is None:
                raise DatasetError(
                    f"{path}: annotation {ann.get('id')} has bbox {ann.get('bbox')!r}, expected [x,y,w,h]"
                )
            self._track_boxes[ann["track_id"]][ann["image_id"]] = box
        self._video_tracks: dict[Any, list[Any]] = defaultdict(list)
        for tid, track in self._tracks.items():
            if self._track_boxes.get(tid):
                self._video_tracks[track.get("video_id")].append(tid)
        self._names: dict[str, Any] = {}
        for vid, video in self._videos.items():
            if self._video_tracks.get(vid) and self._video_images.get(vid):
                self._names[str(video.get("name", vid))] = vid
            else:
                self.report.add("video_without_tracks", str(video.get("name", vid)))

    def _target_track(self, vid: Any) -> Any:
        def key(tid: Any) -> tuple[int, float, int]:
            boxes = self._track_boxes[tid].values()
            mean_area = sum(max(b[2], 0) * max(b[3], 0) for b in boxes) / len(boxes)
            tid_rank = -tid if isinstance(tid, int) else 0
            return (len(boxes), mean_area, tid_rank)

        return max(sorted(self._video_tracks[vid], key=str), key=key)

    def _category(self, tid: Any) -> str | None:
        cid = self._tracks[tid].get("category_id")
        return self._categories.get(cid, None if cid is None else str(cid))

    def index(self) -> list[SequenceInfo]:
        return [
            SequenceInfo(name, self._category(self._target_track(vid))) for name, vid in sorted(self._names.items())
        ]

    def _track_boxes_per_frame(self, tid: Any, images: list[dict[str, Any]], name: str) -> list[Box | None]:
        per_image = self._track_boxes[tid]
        out: list[Box | None] = []
        for img in images:
            xywh = per_image.get(img["id"])
            if xywh is None:
                out.append(None)
            elif not all(v == v for v in xywh) or xywh[2] <= 0 or xywh[3] <= 0:
                self.report.add("zero_area_box", f"{name} track {tid} {img['file_name']}")
                out.append(None)
            else:
                out.append(Box.from_xywh(xywh))
        return out

    def load(self, name: str) -> TrackSequence | None:
        vid = self._names.get(name)
        if vid is None:
            self.report.add("missing_sequence", name)
            return None
        images = self._video_images[vid]
        target = self._target_track(vid)
        boxes = self._track_boxes_per_frame(target, images, name)
        distractors = tuple(
            Track(str(tid), tuple(self._track_boxes_per_frame(tid, images, name)), self._category(tid))
            for tid in sorted(self._video_tracks[vid], key=str)
            if tid != target
        )
        sizes = [(img.get("width"), img.get("height")) for img in images]
        frame_sizes: tuple[tuple[int, int], ...] | None = None
        if all(isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 for w, h in sizes):
            frame_sizes = tuple((w, h) for w, h in sizes)
        return TrackSequence(
            name=name,
            frames=tuple(self.frames_dir / str(img["file_name"]) for img in images),
            boxes=tuple(boxes),
            visible=tuple(b is not None for b in boxes),
            category=self._category(target),
            distractors=distractors,
            frame_sizes=frame_sizes,
            meta={"split": self.split, "target_track": str(target)},
        )
