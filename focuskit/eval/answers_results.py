"""The results file of `focuskit eval-answers`: one JSON line per (item, mode), appended and fsynced, so an
interrupted run resumes where it stopped, and the key that says which records belong to a run's configuration
(a rerun with another judge re-judges only the open items)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from focuskit.core.errors import ConfigError, DatasetError
from focuskit.core.io import atomic_write_text


class ResultsFile:
    """One JSON object per line, appended and fsynced per record; a torn last line (a crash mid-write) is dropped
    when the file is opened again."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"results path {self.path} exists and is not a file")
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            good: list[str] = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(text.splitlines()):  # the torn tail of an interrupted run
                        continue
                    raise DatasetError(f"{self.path}:{n}: not valid JSON; not a results file of eval-answers") from None
                if not isinstance(obj, dict) or "id" not in obj or "mode" not in obj:
                    raise DatasetError(f"{self.path}:{n}: not a result record (needs id and mode)")
                self.records.append(obj)
                good.append(line)
            if len(good) != sum(1 for ln in text.splitlines() if ln.strip()):
                atomic_write_text(self.path, "".join(g + "\n" for g in good))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)

    def close(self) -> None:
        self._fh.close()


def record_key(item_id: str, mode: str, kind: str, answerer: str, judge: str | None, clip: str | None) -> str:
    """Identity of a result: what it depends on. A rerun with another judge re-judges only the open items."""
    return json.dumps([item_id, mode, answerer, judge if kind == "open" else None, clip if kind == "caption" else None])


def key_of_record(rec: dict[str, Any]) -> str:
    """The `record_key` of a stored record (what `evaluate_answers` skips on resume)."""
    return record_key(rec["id"], rec["mode"], rec.get("kind", ""), rec.get("answerer", ""), rec.get("judge"),
                      rec.get("clip"))  # fmt: skip


def current_records(
    records: Iterable[dict[str, Any]], item_ids: set[str], answerer: str, judge: str | None, clip: str | None
) -> list[dict[str, Any]]:
    """The records of this run's configuration (the file may also hold other judges' or models' results)."""
    out = {}
    for r in records:
        if r["id"] not in item_ids:
            continue
        if key_of_record(r) == record_key(r["id"], r["mode"], r.get("kind", ""), answerer, judge, clip):
            out[(r["id"], r["mode"])] = r
    return list(out.values())


__all__ = ["ResultsFile", "current_records", "key_of_record", "record_key"]
