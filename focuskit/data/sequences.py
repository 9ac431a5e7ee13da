"""Annotated videos as one type: `TrackSequence`, the `SequenceDataset` protocol the readers implement, and
`DataReport`, the tally of what a reader or the episode builder skipped.

Tracking benchmarks (GOT-10k, LaSOT, TAO) and PerMIRS all come down to "frames of one video, the target's box in
each, whether it is visible, and maybe other objects". Each reader turns its own layout into that shape, so the
episode builder (`focuskit.data.episode_builder`) has one sampling rule to get right instead of four.

A reader is split into a cheap `index()` (names and categories, read from list files and folder names) and a
`load(name)` that parses one sequence's annotations. Splits and `--limit` work on the index, so building 180
episodes from LaSOT's 1,400 videos parses 180 `groundtruth.txt` files, not 1,400.

Bad data does not crash a 10,000-video run: a reader skips what it cannot use (a zero-area box, a sequence folder
listed but missing, an annotation pointing at no frame) and counts it in its `DataReport` under a short reason, with
the first few places it happened. Structural errors (a root in the wrong layout, a line that does not parse) are
`DatasetError`s naming the file and line, because they mean the user pointed at the wrong thing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from focuskit.core.box import Box
from focuskit.core.errors import DatasetError
from focuskit.core.media import is_image


def list_images(folder: Path) -> list[Path]:
    """Images directly inside `folder` (by `focuskit.core.media`, the table the CLI uses), sorted by name (frame
    order in every tracking layout)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


@dataclass(frozen=True)
class Track:
    """Another object in a multi-object video (a distractor): its id, category and box per frame."""

    track_id: str
    boxes: tuple[Box | None, ...]
    """One entry per frame of the sequence, `None` where the object is not annotated."""
    category: str | None = None


@dataclass(frozen=True)
class TrackSequence:
    """One video: frames in order, the target's box per frame, and whether the target can be seen in it.

    `boxes[i] is None` means frame i has no usable box (not annotated, absent, or a degenerate box the reader
    skipped); `visible[i]` is False when the dataset flags the target absent, fully occluded or out of view.
    A frame is usable as a support or query only when both say so.
    """

    name: str
    frames: tuple[Path, ...]
    boxes: tuple[Box | None, ...]
    visible: tuple[bool, ...]
    category: str | None = None
    distractors: tuple[Track, ...] = ()
    frame_sizes: tuple[tuple[int, int], ...] | None = None
    """(width, height) per frame when the annotation gives it (TAO); otherwise read from image headers on demand."""
    query_index: int | None = None
    """Set when the dataset's own protocol fixes the query frame (PerMIRS: frame 1); `None` = the last usable one."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        object.__setattr__(self, "boxes", tuple(self.boxes))
        object.__setattr__(self, "visible", tuple(bool(v) for v in self.visible))
        object.__setattr__(self, "distractors", tuple(self.distractors))
        n = len(self.frames)
        if len(self.boxes) != n or len(self.visible) != n:
            raise DatasetError(
                f"sequence {self.name!r}: {n} frames but {len(self.boxes)} boxes and {len(self.visible)} visibility "
                "flags; they must be aligned one per frame"
            )
        for t in self.distractors:
            if len(t.boxes) != n:
                raise DatasetError(
                    f"sequence {self.name!r}: distractor track {t.track_id!r} has {len(t.boxes)} boxes for {n} frames"
                )
        if self.frame_sizes is not None:
            object.__setattr__(self, "frame_sizes", tuple(self.frame_sizes))
            if len(self.frame_sizes) != n:
                raise DatasetError(f"sequence {self.name!r}: {len(self.frame_sizes)} frame sizes for {n} frames")
        if self.query_index is not None and not 0 <= self.query_index < n:
            raise DatasetError(f"sequence {self.name!r}: query_index {self.query_index} outside 0..{n - 1}")

    def __len__(self) -> int:
        return len(self.frames)

    def usable_indices(self) -> list[int]:
        """Frames where the target is visible and has a box, in order."""
        return [i for i in range(len(self.frames)) if self.visible[i] and self.boxes[i] is not None]

    def distractor_boxes(self, index: int) -> list[Box]:
        """Boxes of the other annotated objects in frame `index`."""
        return [b for t in self.distractors if (b := t.boxes[index]) is not None]


@dataclass(frozen=True)
class SequenceInfo:
    """What a reader knows about a sequence without parsing its annotations."""

    name: str
    category: str | None = None


@dataclass
class DataReport:
    """Counts of skipped or repaired items by reason, with the first few places each happened."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, reason: str, where: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        if where:
            seen = self.examples.setdefault(reason, [])
            if len(seen) < self.max_examples:
                seen.append(where)

    def merge(self, other: DataReport) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            for where in other.examples.get(reason, []):
                seen = self.examples.setdefault(reason, [])
                if len(seen) < self.max_examples:
                    seen.append(where)

    def __bool__(self) -> bool:
        return bool(+self.counts)

    def to_json(self) -> dict[str, Any]:
        return {r: {"count": n, "examples": self.examples.get(r, [])} for r, n in sorted(self.counts.items())}

    def lines(self) -> list[str]:
        """Human-readable lines, one per reason: `zero_area_box: 3 (e.g. a/groundtruth.txt:4)`."""
        out = []
        for reason, n in sorted(self.counts.items()):
            ex = self.examples.get(reason)
            out.append(f"{reason}: {n}" + (f" (e.g. {ex[0]})" if ex else ""))
        return out


@runtime_checkable
class SequenceDataset(Protocol):
    """A video dataset on disk in one official layout. Implemented by the GOT-10k, LaSOT, TAO and PerMIRS readers."""

    format_name: str
    root: Path
    split: str
    report: DataReport

    def index(self) -> list[SequenceInfo]:
        """Every sequence of the split, sorted by name; cheap (no annotation parsing)."""
        ...

    def load(self, name: str) -> TrackSequence | None:
        """Parse one sequence; `None` when it cannot be used at all (the reason is counted in `report`)."""
        ...


def iter_sequences(dataset: SequenceDataset, infos: Sequence[SequenceInfo] | None = None) -> Iterator[TrackSequence]:
    """Load the given (default: all) sequences of `dataset`, skipping the ones the reader rejects."""
    for info in dataset.index() if infos is None else infos:
        seq = dataset.load(info.name)
        if seq is not None:
            yield seq


def parse_number_row(text: str, where: str, *, count: int | None = None) -> list[float]:
    """Numbers of one annotation line, separated by commas, tabs or spaces (all three occur in the wild).

    Raises `DatasetError` naming `where` (file:line) when a field is not a number or the count is wrong.
    """
    parts = [p for p in text.replace(",", " ").replace("\t", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise DatasetError(f"{where}: expected numbers separated by commas, got {text.strip()!r}") from None
    if count is not None and len(values) != count:
        raise DatasetError(f"{where}: expected {count} numbers, got {len(values)} in {text.strip()!r}")
    return values


def read_xywh_file(path: Path) -> tuple[list[Box | None], list[int]]:
    """Read a tracking `groundtruth.txt`: one `x,y,w,h` line per frame (GOT-10k, LaSOT, OTB convention).

    Returns the boxes and the indices of degenerate lines (zero or negative width/height, NaN), which become
    `None`: LaSOT and GOT-10k write such boxes for frames where the target is gone, so the caller decides from the
    visibility flags whether a degenerate box is expected or a bad annotation to count. A line that does not have
    four numbers is a `DatasetError` with the file and line number.
    """
    boxes: list[Box | None] = []
    degenerate: list[int] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            x, y, w, h = parse_number_row(line, f"{path}:{lineno}", count=4)
            if not all(map(_finite, (x, y, w, h))) or w <= 0 or h <= 0:
                degenerate.append(len(boxes))
                boxes.append(None)
                continue
            boxes.append(Box.from_xywh((x, y, w, h)))
    return boxes, degenerate


def read_flag_file(path: Path, *, one_line: bool) -> list[int]:
    """Integer flags: one per line (GOT-10k `absence.label`, `cover.label`) or one comma-separated line (LaSOT)."""
    flags: list[int] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            values = parse_number_row(line, f"{path}:{lineno}", count=None if one_line else 1)
            if not all(_finite(v) and float(v).is_integer() for v in values):
                raise DatasetError(f"{path}:{lineno}: expected integer flags, got {line.strip()!r}")
            flags.extend(int(v) for v in values)
    return flags


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
