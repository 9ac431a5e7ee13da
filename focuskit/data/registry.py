"""Dataset format names -> readers, so the CLI can say `--format got10k` and never branch on the dataset.

Three kinds of source: `sequences` (annotated videos, a `SequenceDataset`), `concepts` (personalization concept
sets, a `ConceptDataset`) and `episodes` (finished episode files). Readers are imported only when opened, so
listing formats stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from focuskit.core.errors import ConfigError
from focuskit.core.registry import Registry
from focuskit.data.sequences import DataReport

Kind = Literal["sequences", "concepts", "episodes"]


@dataclass(frozen=True)
class DatasetFormat:
    """One on-disk format: how to open it, which splits it has, and its layout in one line (for --help/docs)."""

    name: str
    kind: Kind
    target: str
    """`module:callable` taking (root, split) and returning the dataset."""
    splits: tuple[str, ...]
    default_split: str
    layout: str

    def open(self, root: str | Path, split: str | None = None, report: DataReport | None = None) -> Any:
        """Open `root`; concept readers count what they skip into `report` (sequence datasets keep their own)."""
        split = self.default_split if split is None else split
        if split not in self.splits:
            raise ConfigError(f"format {self.name!r} has splits {', '.join(self.splits)}; got --split {split!r}")
        module, attr = self.target.split(":")
        opener: Callable[[Path, str, DataReport], Any] = getattr(importlib.import_module(module), attr)
        return opener(Path(root), split, report if report is not None else DataReport())


# --- openers with the common (root, split) signature ------------------------------------------------------------
def _got10k(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.got10k import Got10kDataset

    return Got10kDataset(root, split)


def _lasot(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.lasot import LasotDataset

    return LasotDataset(root, split)


def _tao(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.tao import TaoDataset

    return TaoDataset(root, split)


def _permirs(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.permirs import PermirsDataset

    return PermirsDataset(root, split)


def _perseg(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.perseg import read_perseg

    return read_perseg(root, report=report)


def _myvlm(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.concepts import read_myvlm

    return read_myvlm(root, report=report)


def _yollava(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.concepts import read_yollava

    return read_yollava(root, report=report)


def _this_is_my(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.concepts import read_this_is_my

    return read_this_is_my(root, variant=split, report=report)


def _concept_folders(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.concepts import read_concept_folders

    return read_concept_folders(root, report=report)


def _episode_file(root: Path, split: str, report: DataReport) -> Any:
    from focuskit.data.episodes_jsonl import load_episodes

    return load_episodes(root)


_M = "focuskit.data.registry"
FORMATS: Registry[DatasetFormat] = Registry("dataset format")
for _format in (
    DatasetFormat("got10k", "sequences", f"{_M}:_got10k", ("train", "val", "test"), "val",
                  "<root>/{train,val,test}/list.txt, <split>/<seq>/00000001.jpg + groundtruth.txt, *.label"),
    DatasetFormat("lasot", "sequences", f"{_M}:_lasot", ("all", "train", "test"), "all",
                  "<root>/<class>/<class>-<n>/img/%08d.jpg + groundtruth.txt, full_occlusion.txt, out_of_view.txt"),
    DatasetFormat("tao", "sequences", f"{_M}:_tao", ("train", "val", "test"), "val",
                  "<root>/annotations/{train,validation,test}.json + <root>/frames/<file_name>"),
    DatasetFormat("permirs", "sequences", f"{_M}:_permirs", ("all",), "all",
                  "<root>/<video>/{0,1,2}.jpg + masks.npz.npy"),
    DatasetFormat("perseg", "concepts", f"{_M}:_perseg", ("all",), "all",
                  "<root>/Images/<object>/00.jpg + <root>/Annotations/<object>/00.png"),
    DatasetFormat("myvlm", "concepts", f"{_M}:_myvlm", ("all",), "all", "<root>/[data/]<concept>/*.jpg"),
    DatasetFormat("yollava", "concepts", f"{_M}:_yollava", ("all",), "all",
                  "<root>/train/<concept>/*.png + <root>/test/<concept>/*.png"),
    DatasetFormat("thisismy", "concepts", f"{_M}:_this_is_my", ("single", "multi"), "single",
                  "<root>/{Single,Multi}-concept/train/<concept>/ + test/<Positive|Negative (Hard)|..>/<concept>/"),
    DatasetFormat("concept-folders", "concepts", f"{_M}:_concept_folders", ("all",), "all",
                  "<root>/<concept>/references/ [+ positives/, negatives/<split>/, boxes.json, masks/]"),
    DatasetFormat("jsonl", "episodes", f"{_M}:_episode_file", ("all",), "all", "focuskit episode .jsonl file"),
    DatasetFormat("iploc", "episodes", f"{_M}:_episode_file", ("all",), "all",
                  "IPLoc episode .json file or a folder of them"),
):  # fmt: skip
    FORMATS.register(_format.name, _format)


def available_formats() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str) -> DatasetFormat:
    """The format registered as `name`; unknown names raise `ConfigError` listing the known ones."""
    return FORMATS.lookup(name)


def open_dataset(name: str, root: str | Path, split: str | None = None, report: DataReport | None = None) -> Any:
    """Open `root` as format `name`: a `SequenceDataset`, a `ConceptDataset` or a list of `Episode`s."""
    return get_format(name).open(root, split, report)
