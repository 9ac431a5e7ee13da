"""LaSOT reader.

Layout (as read by pytracking's `ltr/dataset/lasot.py` and `pytracking/evaluation/lasotdataset.py`, and as
unpacked from the official per-class zips)::

    <root>/<class>/<class>-<n>/img/00000001.jpg ...   frames, numbered from 1
    <root>/<class>/<class>-<n>/groundtruth.txt         x,y,w,h per frame, comma-separated
    <root>/<class>/<class>-<n>/full_occlusion.txt      one line of comma-separated 0/1 flags, one per frame
    <root>/<class>/<class>-<n>/out_of_view.txt         same, 1 = target out of view
    <root>/<class>/<class>-<n>/nlp.txt                 a sentence about the target (kept in meta)
    <root>/training_set.txt, <root>/testing_set.txt    optional official protocol-II lists, one `<class>-<n>` a line

A frame is visible when it is neither fully occluded nor out of view (pytracking's rule). The class folder is the
category. Splits: `all` (every sequence found), `train`/`test` (the official protocol-II lists, which must be present
in the root). The paper's unseen-category protocol is a category partition on top of `all`:
`focuskit data episodes --format lasot --split all --partition category --part test` (half of the 70 classes, chosen
with the seed, for test; the other half for train).
"""

from __future__ import annotations

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

SPLITS = ("all", "train", "test")
_SPLIT_FILES = {"train": "training_set.txt", "test": "testing_set.txt"}


def category_of(name: str) -> str:
    """`airplane-13` -> `airplane` (class names never contain a dash)."""
    return name.rsplit("-", 1)[0]


class LasotDataset:
    """The sequences of LaSOT. See the module docstring for the layout."""

    format_name = "lasot"

    def __init__(self, root: str | Path, split: str = "all") -> None:
        self.root = Path(root)
        self.split = split
        self.report = DataReport()
        if split not in SPLITS:
            raise DatasetError(f"LaSOT split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not self.root.is_dir():
            raise DatasetError(f"LaSOT root not found: {self.root}")
        self._found = self._scan()
        if not self._found:
            raise DatasetError(
                f"{self.root} is not a LaSOT root: expected files like {self.root}/<class>/<class>-<n>/groundtruth.txt "
                "(e.g. airplane/airplane-1/groundtruth.txt), found none"
            )

    def _scan(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for seq_dir in class_dir.iterdir():
                is_seq = seq_dir.is_dir() and category_of(seq_dir.name) == class_dir.name
                if is_seq and (seq_dir / "groundtruth.txt").is_file():
                    found[seq_dir.name] = seq_dir
        return found

    def index(self) -> list[SequenceInfo]:
        if self.split == "all":
            names = sorted(self._found)
        else:
            list_path = self.root / _SPLIT_FILES[self.split]
            if not list_path.is_file():
                raise DatasetError(
                    f"LaSOT split {self.split!r} needs the official list {list_path}, which is missing; "
                    "use --split all (optionally with --partition category for the unseen-category protocol)"
                )
            listed = [ln.strip() for ln in list_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            names = []
            for name in listed:
                if name in self._found:
                    names.append(name)
                else:
                    self.report.add("missing_sequence_dir", f"{name} (listed in {list_path.name})")
            names.sort()
        return [SequenceInfo(n, category_of(n)) for n in names]

    def load(self, name: str) -> TrackSequence | None:
        seq_dir = self._found.get(name)
        if seq_dir is None:
            self.report.add("missing_sequence_dir", name)
            return None
        gt_path = seq_dir / "groundtruth.txt"
        frames = list_images(seq_dir / "img")
        if not frames:
            self.report.add("sequence_without_frames", str(seq_dir / "img"))
            return None
        boxes, degenerate = read_xywh_file(gt_path)
        n = len(frames)
        if len(boxes) != n:
            self.report.add("annotation_frame_count_mismatch", f"{gt_path} ({len(boxes)} boxes, {n} frames)")
            boxes = (boxes + [None] * n)[:n]
        occluded = self._flags(seq_dir / "full_occlusion.txt", n)
        out_of_view = self._flags(seq_dir / "out_of_view.txt", n)
        visible = [occluded[i] == 0 and out_of_view[i] == 0 for i in range(n)]
        for i in degenerate:
            if i < n and visible[i]:
                self.report.add("zero_area_box", f"{gt_path}:{i + 1}")
        nlp = seq_dir / "nlp.txt"
        meta = {"split": self.split}
        if nlp.is_file():
            meta["description"] = nlp.read_text(encoding="utf-8", errors="replace").strip()
        return TrackSequence(
            name=name,
            frames=tuple(frames),
            boxes=tuple(boxes),
            visible=tuple(visible),
            category=category_of(name),
            meta=meta,
        )

    def _flags(self, path: Path, n: int) -> list[int]:
        """Flags for n frames. A missing file is counted and read as "all visible" (the boxes still rule out
        absent frames, which LaSOT marks 0,0,0,0); frames past the end of a short file count as not visible."""
        if not path.is_file():
            self.report.add("missing_visibility_file", str(path))
            return [0] * n
        flags = read_flag_file(path, one_line=True)
        if len(flags) != n:
            self.report.add("label_length_mismatch", f"{path} ({len(flags)} values, {n} frames)")
            flags = (flags + [1] * n)[:n]
        return flags
