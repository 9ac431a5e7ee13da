"""What one server process holds: the concept memory, the library index, the models, and the indexing job.

Models are built on first use and shared by all requests (one encoder in memory, not one per request). Writes to the
concept memory go through `write_lock`, so two concurrent "create concept" requests are applied one after the
other; the memory itself makes each write one transaction under a file lock, so a crash or a concurrent CLI never
leaves half a concept. Library indexing runs in one background thread at a time; searches read the index
concurrently (SQLite WAL readers never wait for the writer).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focuskit.core.errors import FocusError
from focuskit.library.index import LibraryIndex
from focuskit.server.errors import ApiError
from focuskit.server.settings import ServerSettings

log = logging.getLogger("focuskit.server")


@dataclass
class IndexJob:
    """Progress of the background indexing run, as `/library/status` reports it."""

    state: str = "idle"
    """'idle' (never ran), 'running', 'done' or 'failed'."""
    done: int = 0
    total: int = 0
    error: str | None = None
    report: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    first_file_at: float | None = None
    """When the first file finished: the rate is measured from there, so loading the encoder and scanning the
    folder (seconds, once) do not make the first estimates several times too long."""

    def to_json(self) -> dict[str, Any]:
        """The job as `/library/status` reports it, with `phase` and, while files are computed, a rate and ETA."""
        now = time.time()
        end = self.finished_at or now
        elapsed = None if self.started_at is None else round(end - self.started_at, 2)
        rate = eta = None
        if self.state == "running" and self.first_file_at is not None and self.done > 1 and self.total:
            spent = now - self.first_file_at
            if spent > 0:
                rate = (self.done - 1) / spent
                eta = round((self.total - self.done) / rate, 1) if rate > 0 else None
        phase = ("computing" if self.total else "preparing") if self.state == "running" else self.state
        return {
            "state": self.state,
            "phase": phase,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "report": self.report,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": elapsed,
            "files_per_s": None if rate is None else round(rate, 3),
            "eta_s": eta,
        }


class AppState:
    """The server's shared objects. Created by `create_app`; routes reach it as `request.app.state.focuskit`."""

    def __init__(self, settings: ServerSettings) -> None:
        from focuskit.memory.store import ConceptMemory

        self.settings = settings
        # The memory first: it refuses a non-empty directory without its FORMAT file, and the index state may
        # live inside it.
        self.memory = ConceptMemory(settings.memory_dir)
        self.write_lock = threading.Lock()
        self.compute = threading.BoundedSemaphore(settings.inference_slots)
        """Held around every model call (see `ServerSettings.inference_slots`); taken before `write_lock`."""
        self.job = IndexJob()
        self._job_lock = threading.Lock()
        self._job_thread: threading.Thread | None = None
        self._model_lock = threading.Lock()
        self._localizers: dict[str, Any] = {}
        self._detectors: dict[str, Any] = {}
        self._backend: Any | None = None
        self._segmenter: Any | None = None
        self.library_dir: Path | None = settings.library_dir.resolve() if settings.library_dir is not None else None
        self.index: LibraryIndex | None = None
        if self.library_dir is not None:
            if not self.library_dir.is_dir():
                from focuskit.core.errors import DatasetError

                raise DatasetError(f"library folder not found or not a folder: {settings.library_dir}")
            memory = self.memory
            self.index = LibraryIndex(settings.resolved_state_dir, settings.library, encoder=lambda: memory.encoder)

    @property
    def protected_dirs(self) -> tuple[Path, ...]:
        """Folders never served from the library even when they sit inside it."""
        return (self.settings.memory_dir.resolve(), self.settings.resolved_state_dir.resolve())

    def require_index(self) -> tuple[LibraryIndex, Path]:
        if self.index is None or self.library_dir is None:
            raise ApiError(404, "no_library", "this server has no library folder: start it with --library DIR")
        return self.index, self.library_dir

    # --- models -------------------------------------------------------------------------------------------
    def localizer(self, engine: str) -> Any:
        if engine not in self.settings.engines:
            raise ApiError(422, "invalid_input", f"engine must be one of {self.settings.engines}, got {engine!r}")
        with self._model_lock:
            if engine not in self._localizers:
                from focuskit.localizers import create_localizer

                # One localizer serves every request: the matching engine is built for the most instances a
                # request may ask for, and each answer is cut to what that request asked (its best box is the same).
                options = {"max_instances": self.settings.max_instances_limit} if engine == "matching" else {}
                self._localizers[engine] = create_localizer(engine, **options)
            return self._localizers[engine]

    def detector(self, *, segment: bool = False) -> Any:
        """The shared detector; with `segment`, the one whose detections carry masks from the server's segmenter
        (its best candidates re-ranked by mask, `ConceptDetector` with a segmenter)."""
        segmenter = self.segmenter() if segment else None
        with self._model_lock:
            key = "segment" if segment else "boxes"
            if key not in self._detectors:
                from focuskit.personalize.detector import ConceptDetector, DetectorConfig

                tau = self.settings.detector_tau
                config = DetectorConfig() if tau is None else DetectorConfig(tau=tau)
                self._detectors[key] = ConceptDetector(self.memory, config=config, segmenter=segmenter)
            return self._detectors[key]

    def segmenter(self) -> Any:
        with self._model_lock:
            if self._segmenter is None:
                from focuskit.models.segmenters import create_segmenter

                self._segmenter = create_segmenter(self.settings.segmenter)
            return self._segmenter

    @property
    def test_model(self) -> bool:
        """True when `/ask` is answered by the built-in tiny random-weight VLM: its text is noise, say so."""
        cfg = self.settings.backend
        return cfg.kind == "hf" and cfg.model == "tiny"  # focuskit.backends.hf.TINY (that module imports torch)

    def check_backend(self) -> None:
        """503 with how to configure one when there is no VLM backend (cheap: loads nothing)."""
        if self.settings.backend.kind == "none":
            self.backend()

    def backend(self) -> Any:
        cfg = self.settings.backend
        if cfg.kind == "none":
            raise ApiError(
                503,
                "no_backend",
                "no VLM backend is configured, so /ask cannot answer: start the server with "
                "--backend hf --model PATH, or --backend openai --base-url http://HOST:PORT/v1 [--model NAME]",
            )
        with self._model_lock:
            if self._backend is None:
                from focuskit.server.adapters import create_backend

                self._backend = create_backend(cfg)
            return self._backend

    # --- library indexing ---------------------------------------------------------------------------------
    def start_indexing(self, *, reindex: bool = False) -> bool:
        """Start a background indexing run; False when one is already running."""
        index, root = self.require_index()
        with self._job_lock:
            if self.job.state == "running":
                return False
            self.job = IndexJob(state="running", started_at=time.time())
            thread = threading.Thread(
                target=self._run_index, args=(index, root, reindex), daemon=True, name="focuskit-index"
            )
            self._job_thread = thread
        thread.start()
        return True

    def _run_index(self, index: LibraryIndex, root: Path, reindex: bool) -> None:
        job = self.job

        def progress(done: int, total: int) -> None:
            # Called once per computed file. The `done` passed is the index's tqdm count, which stays 0 when the
            # bar is disabled (as here: no terminal), which is why the page used to show "indexing 0/0 files"; count
            # the calls instead.
            if job.first_file_at is None:
                job.first_file_at = time.time()
            job.done, job.total = job.done + 1, total

        try:
            report = index.update(
                root, reindex=reindex, progress=False, exclude=self.protected_dirs, on_progress=progress
            )
            job.report = report.to_json()
            job.done = job.total = report.computed + len(report.failed)
            job.state = "done"
        except FocusError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # a bug: keep the server up, log the traceback, report it
            log.exception("library indexing failed")
            job.error, job.state = f"internal error: {type(exc).__name__}", "failed"
        finally:
            job.finished_at = time.time()

    def wait_for_indexing(self, timeout: float | None = None) -> None:
        thread = self._job_thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        """Release the memory. A running indexing thread is a daemon: it commits per batch, so stopping the
        process mid-run loses at most one batch, which the next run recomputes."""
        self.memory.close()
