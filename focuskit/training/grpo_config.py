"""`FocusGRPOConfig`: TRL's `GRPOConfig` (every field usable) plus what FOCUS stage 2 needs on top.

A YAML file (`configs/grpo_*.yaml`) and `key=value` overrides fill this dataclass through `training.config_io`
(the parser the SFT config uses too); an unknown key is an error naming it and its closest names. The TRL and
transformers fields keep their names and meanings (`num_generations`, `per_device_train_batch_size`,
`max_completion_length`, `loss_type`, `beta`, `epsilon`/`epsilon_high`, `scale_rewards`,
`mask_truncated_completions`, `use_vllm`/`vllm_mode`, `report_to`, `save_steps`, `resume_from_checkpoint`, ...), so
a TRL user's settings carry over unchanged. focuskit adds the start checkpoint, the episode files, the prompt, LoRA,
4-bit loading, the reward functions by name and the diagnostics thresholds.

`__post_init__` checks our fields (TRL's own `__post_init__` checks its fields); `check_paths` checks the files
(start checkpoint, episode files) and is the first thing `train_grpo` does, so a typo costs seconds, not a model load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import trl

from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import AttnImpl, LoraSettings
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.models.vlms.sampling import check_sampling

REWARD_NAMES = ("iou", "format")
"""Reward functions selectable by name in `reward_funcs` (see `focuskit.training.rewards.REWARD_FUNCS`)."""


@dataclass
class DiagnosticsConfig:
    """When the trainer warns that GRPO has stopped learning (see docs/grpo.md, "Diagnostics")."""

    zero_std_threshold: float = 1e-4
    """A group whose rewards have a standard deviation below this gives zero advantages: no learning signal."""
    zero_std_patience: int = 10
    """Warn when the mean within-group reward std stays below the threshold this many logged steps in a row."""
    min_format_rate: float = 0.05
    """Warn when fewer than this fraction of answers are well-formed boxes for `zero_std_patience` logged steps."""

    def __post_init__(self) -> None:
        if self.zero_std_threshold < 0:
            raise ConfigError(f"diagnostics.zero_std_threshold must be >= 0, got {self.zero_std_threshold}")
        if self.zero_std_patience < 1:
            raise ConfigError(f"diagnostics.zero_std_patience must be >= 1, got {self.zero_std_patience}")
        if not 0 <= self.min_format_rate <= 1:
            raise ConfigError(f"diagnostics.min_format_rate must be in [0, 1], got {self.min_format_rate}")


@dataclass
class FocusGRPOConfig(trl.GRPOConfig):
    """One GRPO run: TRL's `GRPOConfig` plus the FOCUS start checkpoint, data, prompt, LoRA and rewards.

    Defaults that differ from TRL's: `output_dir` (runs/grpo), `logging_steps` (1), `max_steps` (100),
    `max_completion_length` (48: a box answer is ~20 tokens), `num_generations` (4), `per_device_train_batch_size` (8),
    `gradient_checkpointing` (False: tiny runs on CPU), `bf16` (False: the 7B config turns it on), `seed` (0),
    `learning_rate` (1e-5, a LoRA rate; see docs/grpo.md), `beta` (0.04, the GRPO paper's KL weight; TRL's is 0),
    `loss_type` (grpo, the GRPO paper's and FOCUS's; TRL's is dapo),
    `reward_weights` ([1, 1] for iou + format).
    """

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "group_size": "num_generations",
        "batch_size": "per_device_train_batch_size (answers per step and device, a multiple of num_generations)",
        "max_new_tokens": "max_completion_length",
        "lr_scheduler": "lr_scheduler_type",
        "warmup_ratio": "warmup_steps (a value below 1 is a fraction of the training steps)",
        "progress_bar": "disable_tqdm (inverted)",
    }
    """Keys of the hand-written trainer's config: an old YAML fails naming the TRL key (`config_io.check_keys`)."""
    DERIVED_KEYS: ClassVar[tuple[str, ...]] = ("generation_batch_size", "steps_per_generation")
    """Fields TRL's `__post_init__` derives from each other (and refuses both set): never written to a record."""

    # --- TRL / transformers defaults focuskit changes -----------------------------------------------------------
    output_dir: str | None = "runs/grpo"
    logging_steps: float = 1
    max_steps: int = 100
    learning_rate: float = 1e-5
    max_completion_length: int | None = 48
    num_generations: int | None = 4
    per_device_train_batch_size: int = 8
    gradient_checkpointing: bool = False
    bf16: bool | None = False
    seed: int = 0
    beta: float = 0.04
    loss_type: str = "grpo"
    reward_weights: list[float] | None = field(default_factory=lambda: [1.0, 1.0])

    # --- focuskit ----------------------------------------------------------------------------------------------
    model: str = "runs/sft/final"
    """The SFT checkpoint to start from (a local directory: full model or LoRA adapter). The KL anchor (reference
    policy) is this checkpoint: an SFT adapter is merged first, then TRL adds fresh LoRA adapters (`lora`), so
    "adapter disabled" is exactly the SFT model and no second copy is kept in memory."""
    data: list[str] = field(default_factory=list)
    """Episode files (focuskit `.jsonl`, IPLoc `.json`, or folders of IPLoc files); all are concatenated."""
    shots: int | None = None
    """Use only the first `shots` supports of each episode (None: all)."""
    absent_episodes: bool = False
    """Train on absent-query episodes too (answer "not present"; reward 1 for a correct rejection, 0 for a box).
    Off in the paper-faithful configs: absent episodes are then dropped, with a count in the log."""
    prompt: PromptConfig | None = None
    """How episodes become prompts. None: the prompt config saved with the checkpoint (what SFT trained on)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The adapters GRPO trains (handed to TRL as its `peft_config`). The reference is the model with them off."""
    load_in_4bit: bool = False
    """QLoRA, as the paper trains: the start model in 4-bit NF4 (bitsandbytes; needs a CUDA GPU), adapters in bf16."""
    attn_implementation: AttnImpl = "auto"
    """auto: FlashAttention-2 when installed on a GPU, else SDPA."""
    reward_funcs: list[str] = field(default_factory=lambda: ["iou", "format"])
    """Reward functions by name, weighted by `reward_weights` in the same order: iou (IoU with the target box, 1/0
    for absent targets) and format (1 for exactly the trained box form)."""
    max_prompt_length: int = 8192
    """Episodes whose prompt (text + visual tokens) is longer are refused before training, never truncated:
    cutting a multi-image prompt would cut images."""
    cache_encoded: bool = False
    """Keep each episode's encoded prompt (token ids and pixel values) in RAM after first use: for small datasets
    sampled many times (tiny runs). Off for real datasets, whose pixel values would not fit."""
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    save_merged: bool = False
    """Save the final model with the adapters merged into full weights (one self-contained checkpoint) instead of
    adapters that name the start checkpoint as their base."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        self._check_focus_fields()
        try:
            super().__post_init__()
        except ValueError as exc:  # TRL's and transformers' own checks: one line naming what to change
            raise ConfigError(str(exc).strip().splitlines()[0]) from None

    def _check_focus_fields(self) -> None:
        if self.num_generations is None or self.num_generations < 2:
            raise ConfigError(
                f"num_generations must be >= 2, got {self.num_generations}: advantages compare answers within a group"
            )
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.generation_batch_size is None and self.steps_per_generation is None and batch % self.num_generations:
            suggestion = max(1, batch // self.num_generations) * self.num_generations
            raise ConfigError(
                f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) must be a multiple of "
                f"num_generations ({self.num_generations}): each episode contributes a whole group; try "
                f"per_device_train_batch_size={suggestion}"
            )
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots must be >= 1 or null, got {self.shots}")
        check_sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_completion_length or 0,
        )
        if self.repetition_penalty != 1.0:
            raise ConfigError(
                f"repetition_penalty must be 1.0 for GRPO rollouts, got {self.repetition_penalty}: a penalty samples "
                "from a distribution other than the one whose log-probabilities enter the ratio, and it penalizes "
                "the digits the support boxes already show"
            )
        if self.max_prompt_length < 16:
            raise ConfigError(f"max_prompt_length must be >= 16 tokens, got {self.max_prompt_length}")
        if not 0 < self.epsilon < 1:
            raise ConfigError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ConfigError(f"epsilon_high must be > 0 or null, got {self.epsilon_high}")
        if self.beta < 0:
            raise ConfigError(f"beta (KL coefficient) must be >= 0, got {self.beta}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps} (GRPO runs are sized in steps)")
        self._check_rewards()
        if not self.output_dir:
            raise ConfigError("output_dir must name a directory")

    def _check_rewards(self) -> None:
        unknown = [name for name in self.reward_funcs if name not in REWARD_NAMES]
        if unknown or not self.reward_funcs:
            raise ConfigError(
                f"reward_funcs: unknown reward {unknown[0] if unknown else '(none given)'!r}; "
                f"known: {', '.join(REWARD_NAMES)}"
            )
        weights = self.reward_weights if self.reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ConfigError(
                f"number of reward_weights ({len(weights)}) must match number of reward_funcs "
                f"({len(self.reward_funcs)}: {', '.join(self.reward_funcs)})"
            )
        for name, weight in zip(self.reward_funcs, weights, strict=True):
            if weight < 0:
                raise ConfigError(
                    f"reward_weights: the weight of {name} must be >= 0, got {weight}: a negative weight rewards the "
                    "opposite behaviour (worse boxes, malformed answers)"
                )
        if all(w == 0 for w in weights):
            raise ConfigError("reward_weights are all 0: every reward would be 0")

    @property
    def group_size(self) -> int:
        """G, answers sampled per episode (TRL's `num_generations`)."""
        return int(self.num_generations or 0)

    def check_paths(self) -> None:
        """Raise `ConfigError` for a missing start checkpoint or episode file, naming the key and the path."""
        path = Path(self.model).expanduser()
        if not path.exists():
            raise ConfigError(
                f"model: SFT checkpoint not found: {path} (train one with `focuskit train sft`, or point `model` at "
                "its final/ directory)"
            )
        if not path.is_dir() or not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ConfigError(
                f"model: {path} is not a checkpoint directory (expected config.json or adapter_config.json in it)"
            )
        if not self.data:
            raise ConfigError("data: no episode files given; set data to one or more .jsonl / IPLoc .json files")
        for item in self.data:
            if not Path(item).exists():
                raise ConfigError(f"data: episode file not found: {item}")
        resume = self.resume_from_checkpoint
        if resume and str(resume).lower() in ("true", "last"):
            from transformers.trainer_utils import get_last_checkpoint

            out = Path(str(self.output_dir))
            if not out.is_dir() or get_last_checkpoint(str(out)) is None:
                raise ConfigError(f"resume_from_checkpoint={resume}: no checkpoint-N directory in {out} to resume from")
        elif resume and not Path(resume).is_dir():
            raise ConfigError(f"resume_from_checkpoint: checkpoint directory not found: {resume}")
