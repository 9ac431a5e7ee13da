"""Trainer callbacks for GRPO runs: the zero-variance warning and the `metrics.jsonl` file.

TRL logs `frac_reward_zero_std` every step, but nobody reads a number for hours: the loss keeps going down while
every group's answers score the same and nothing is learned. `DiagnosticsCallback` turns a streak of such steps (or
of steps without well-formed answers) into a warning in the log and in `GRPOResult.warnings`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from focuskit.core.io import atomic_write_text
from focuskit.training.grpo_config import DiagnosticsConfig

logger = logging.getLogger(__name__)


class ZeroVarianceMonitor:
    """Counts consecutive logged steps whose within-group reward std is ~0 (and whose format rate is ~0) and warns
    once per streak."""

    def __init__(self, config: DiagnosticsConfig) -> None:
        self.threshold = config.zero_std_threshold
        self.patience = config.zero_std_patience
        self.min_format_rate = config.min_format_rate
        self.zero_std_streak = 0
        self.low_format_streak = 0
        self.warnings: list[str] = []

    def update(self, step: int, reward_std: float | None, format_rate: float | None) -> list[str]:
        fired: list[str] = []
        if reward_std is not None:
            self.zero_std_streak = self.zero_std_streak + 1 if reward_std <= self.threshold else 0
            if self.zero_std_streak == self.patience:
                fired.append(
                    f"step {step}: the reward std within groups has been ~0 (<= {self.threshold:g}) for "
                    f"{self.patience} logged steps in a row: every answer in a group scores the same, so all "
                    "advantages are 0 and GRPO learns nothing. Raise temperature or num_generations, check that "
                    "answers vary, and start from an SFT checkpoint that already writes boxes (docs/grpo.md)."
                )
        if format_rate is not None:
            self.low_format_streak = self.low_format_streak + 1 if format_rate < self.min_format_rate else 0
            if self.low_format_streak == self.patience:
                fired.append(
                    f"step {step}: fewer than {self.min_format_rate:.0%} of answers were well-formed boxes for "
                    f"{self.patience} logged steps in a row: the model does not write the trained box form, so the "
                    "IoU reward is always 0. Start GRPO from an SFT checkpoint (docs/grpo.md, Diagnostics)."
                )
        for msg in fired:
            logger.warning(msg)
        self.warnings += fired
        return fired


class DiagnosticsCallback(TrainerCallback):
    """Feeds each training log (`reward_std_within`, `format_rate`) to a `ZeroVarianceMonitor`."""

    def __init__(self, config: DiagnosticsConfig) -> None:
        self.monitor = ZeroVarianceMonitor(config)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "reward" in logs and state.is_world_process_zero:
            self.monitor.update(state.global_step, logs.get("reward_std_within"), logs.get("format_rate"))


class MetricsFileCallback(TrainerCallback):
    """Writes every training log line (TRL's metrics plus focuskit's) to `path` as JSON lines, atomically.

    On resume the lines of the steps already done are kept (read back from the file), so the file of a resumed run
    reads like the file of an uninterrupted one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines: list[str] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.lines = []
        if state.global_step > 0 and self.path.is_file():  # resumed: keep what the first run logged
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip() and json.loads(line).get("step", math.inf) <= state.global_step:
                    self.lines.append(line)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "reward" not in logs or not state.is_world_process_zero:
            return
        values = {"step": state.global_step, **logs}
        self.lines.append(json.dumps({k: _json_value(v) for k, v in values.items()}))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    return value
