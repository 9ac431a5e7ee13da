"""GOT-10k reader.

Layout (as read by the official toolkit, github.com/got-10k/toolkit `got10k/datasets/got10k.py`, and by
pytracking's `ltr/dataset/got10k.py`)::

    <root>/{train,val,test}/list.txt                 sequence folder names, one per line
    <root>/<split>/<seq>/00000001.jpg ...            frames, numbered from 1
    <root>/<split>/<seq>/groundtruth.txt             x,y,w,h per frame (test: first frame only)
    <root>/<split>/<seq>/absence.label               1 where the target is absent, one value per line
    <root>/<split>/<seq>/cover.label                 visible fraction in eighths 0..8, one value per line
    <root>/<split>/<seq>/cut_by_image.label          1 where the image border cuts the target (not used)
    <root>/<split>/<seq>/meta_info.ini               [METAINFO] then `key: value` lines, incl. object_class

A frame is visible when `absence == 0` and `cover > 0` (pytracking's rule). The object class from `meta_info.ini`
is the category used for category-disjoint splits. GOT-10k withholds the test split's boxes after the first frame,
so test sequences have one usable frame and yield no episodes; they are counted as `first_frame_only_annotation`.
`root` may also point straight at one split folder (the one holding `list.txt`).
"""

from __future__ import annotations

import configparser
from pathlib import Path

from focuskit.core.errors import DatasetError
from focuskit.data.sequences import (
    DataReport,
    SequenceInfo,
    TrackSequence,
    list_images,
    read_flag_file,
    read_xywh_file,
)

SPLITS = ("train", "val", "test")


def read_meta_info(path: Path) -> dict[str, str]:
    """`meta_info.ini` as a dict (empty when the file is missing, as in the test split)."""
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except configparser.Error as exc:
        raise DatasetError(f"{path}: not a GOT-10k meta_info.ini ([METAINFO] then 'key: value' lines): {exc}") from None
    return {k: v.strip() for section in parser.sections() for k, v in parser.items(section)}


class Got10kDataset:
    """The sequences of one GOT-10k split. See the module docstring for the layout."""

    format_name = "got10k"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.report = DataReport()
        if split not in SPLITS:
            raise DatasetError(f"GOT-10k split must be one of {', '.join(SPLITS)}, got {split!r}")
        if (self.root / split / "list.txt").is_file():
            self.split_dir = self.root / split
        elif (self.root / "list.txt").is_file() and self.root.name == split:
            self.split_dir = self.root
        else:
            raise DatasetError(
                f"{self.root} is not a GOT-10k root: expected file {self.root / split / 'list.txt'} is missing "
                f"(layout: <root>/{{train,val,test}}/list.txt and <root>/<split>/<sequence>/groundtruth.txt)"
            )
        self._categories: dict[str, str | None] = {}

    def _names(self) -> list[str]:
        text = (self.split_dir / "list.txt").read_text(encoding="utf-8", errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def index(self) -> list[SequenceInfo]:
        infos = []
        for name in sorted(self._names()):
            if name not in self._categories:
                meta = read_meta_info(self.split_dir / name / "meta_info.ini")
                self._categories[name] = meta.get("object_class") or None
            infos.append(SequenceInfo(name, self._categories[name]))
        return infos

    def load(self, name: str) -> TrackSequence | None:
        seq_dir = self.split_dir / name
        gt_path = seq_dir / "groundtruth.txt"
        if not seq_dir.is_dir():
            self.report.add("missing_sequence_dir", str(seq_dir))
            return None
        if not gt_path.is_file():
            self.report.add("missing_groundtruth", str(gt_path))
            return None
        frames = list_images(seq_dir)
        if not frames:
            self.report.add("sequence_without_frames", str(seq_dir))
            return None
        boxes, degenerate = read_xywh_file(gt_path)
        n = len(frames)
        if len(boxes) > n:
            self.report.add("annotation_without_frame", f"{gt_path} ({len(boxes)} boxes, {n} frames)", len(boxes) - n)
            boxes = boxes[:n]
        if len(boxes) == 1 and n > 1:
            self.report.add("first_frame_only_annotation", str(gt_path))
        boxes = boxes + [None] * (n - len(boxes))
        # Frames a label file does not cover are treated as not visible (absent, cover 0).
        absence = self._flags(seq_dir / "absence.label", n, pad=1)
        cover = self._flags(seq_dir / "cover.label", n, pad=0)
        visible = [
            (absence is None or absence[i] == 0) and (cover is None or cover[i] > 0) for i in range(n)
        ]  # fmt: skip
        for i in degenerate:
            if i < n and visible[i]:
                self.report.add("zero_area_box", f"{gt_path}:{i + 1}")
        if name not in self._categories:
            self._categories[name] = read_meta_info(seq_dir / "meta_info.ini").get("object_class") or None
        return TrackSequence(
            name=name,
            frames=tuple(frames),
            boxes=tuple(boxes),
            visible=tuple(visible),
            category=self._categories[name],
            meta={"split": self.split},
        )

    def _flags(self, path: Path, n: int, *, pad: int) -> list[int] | None:
        """Per-frame flags padded/truncated to n frames; `None` when the file is absent (test split)."""
        if not path.is_file():
            return None
        flags = read_flag_file(path, one_line=False)
        if len(flags) != n:
            self.report.add("label_length_mismatch", f"{path} ({len(flags)} values, {n} frames)")
            flags = (flags + [pad] * n)[:n]
        return flags
