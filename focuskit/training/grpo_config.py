"""`GRPOConfig`: one GRPO run (FOCUS stage 2) as data: start checkpoint, sampling, rewards, clipping, KL, diagnostics.

A YAML file (`configs/grpo_*.yaml`) and `key=value` overrides fill this dataclass via `focuskit.core.config`;
an unknown key is an error. `__post_init__` checks values and their combinations; `check_paths` checks the files
(start checkpoint, episode files) and is the first thing `train_grpo` does, so a typo costs seconds, not a model
load. Names and defaults follow TRL's `GRPOConfig` where the concept is the same (`beta`, `epsilon`,
`num_iterations`, `loss_type`), so settings carry over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import LoraSettings
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.models.vlms.sampling import check_sampling


@dataclass
class RewardWeights:
    """reward = iou * IoU(pred, gt) + format * format_ok (FOCUS: both 1)."""

    iou: float = 1.0
    format: float = 1.0

    def __post_init__(self) -> None:
        for name in ("iou", "format"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(
                    f"reward_weights.{name} must be >= 0, got {value}: a negative weight rewards the opposite "
                    "behaviour (worse boxes, malformed answers)"
                )
        if self.iou == 0 and self.format == 0:
            raise ConfigError("reward_weights.iou and reward_weights.format are both 0: every reward would be 0")


@dataclass
class DiagnosticsConfig:
    """When the trainer warns that GRPO has stopped learning (see docs/grpo.md, "Diagnostics")."""

    zero_std_threshold: float = 1e-4
    """A group whose rewards have a standard deviation below this gives zero advantages: no learning signal."""
    zero_std_patience: int = 10
    """Warn when the mean within-group reward std stays below the threshold this many steps in a row."""
    min_format_rate: float = 0.05
    """Warn when fewer than this fraction of answers are well-formed boxes for `zero_std_patience` steps."""

    def __post_init__(self) -> None:
        if self.zero_std_threshold < 0:
            raise ConfigError(f"diagnostics.zero_std_threshold must be >= 0, got {self.zero_std_threshold}")
        if self.zero_std_patience < 1:
            raise ConfigError(f"diagnostics.zero_std_patience must be >= 1, got {self.zero_std_patience}")
        if not 0 <= self.min_format_rate <= 1:
            raise ConfigError(f"diagnostics.min_format_rate must be in [0, 1], got {self.min_format_rate}")


@dataclass
class GRPOConfig:
    """One GRPO run: sample `group_size` answers per episode, reward them, push the policy toward the better ones."""

    model: str = "runs/sft/final"
    """The SFT checkpoint to start from (a local directory: full model or LoRA adapter). The KL anchor (reference
    policy) is this checkpoint: an SFT adapter is merged first, then fresh LoRA adapters are trained on top, so
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
    """The adapters GRPO trains. Required: the reference policy is the model with them disabled."""
    output_dir: str = "runs/grpo"

    # --- sampling -----------------------------------------------------------------------------------------------
    group_size: int = 4
    """G: answers sampled per episode; advantages are rewards normalized within each group."""
    batch_size: int = 8
    """Answers per optimizer step and process (episodes per step = batch_size / group_size); a multiple of
    group_size. Under `accelerate launch` each process samples its own batch from its shard of the episodes, so a
    step sees batch_size x processes answers (like the SFT trainer's per-device batch)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k filtering."""
    max_new_tokens: int = 48
    cache_encoded: bool = False
    """Keep each episode's encoded prompt (token ids and pixel values) in RAM after first use: for small datasets
    sampled many times (tiny runs). Off for real datasets, whose pixel values would not fit."""
    max_prompt_length: int = 8192
    """Episodes whose prompt (text + visual tokens) is longer are refused before training, never truncated:
    cutting a multi-image prompt would cut images."""

    # --- objective ----------------------------------------------------------------------------------------------
    reward_weights: RewardWeights = field(default_factory=RewardWeights)
    epsilon: float = 0.2
    """Clip range of the policy ratio: [1 - epsilon, 1 + epsilon_high]."""
    epsilon_high: float | None = None
    """Upper clip (DAPO's clip-higher); None: same as epsilon."""
    beta: float = 0.04
    """KL coefficient toward the reference policy (the start checkpoint); 0 skips the reference pass."""
    num_iterations: int = 1
    """Optimizer updates per batch of samples (mu in the GRPO paper). With 1 the ratio is 1 at the update."""
    loss_type: Literal["grpo", "bnpo"] = "grpo"
    """grpo: mean over each answer's tokens, then over answers; bnpo: mean over all answer tokens in the batch."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (Dr. GRPO argues for False)."""

    # --- optimisation -------------------------------------------------------------------------------------------
    learning_rate: float = 1e-5
    max_steps: int = 100
    warmup_ratio: float = 0.01
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    bf16: bool = False
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """auto: FlashAttention-2 when installed on a GPU, else SDPA."""
    gradient_checkpointing: bool = False

    # --- bookkeeping --------------------------------------------------------------------------------------------
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    logging_steps: int = 1
    save_steps: int = 0
    """Save LoRA adapters every this many steps (0: only the final model)."""
    save_merged: bool = False
    """Save the final model with the adapters merged into full weights (one self-contained checkpoint) instead of
    adapters that name the start checkpoint as their base."""
    seed: int = 0
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2, got {self.group_size}: advantages compare answers within a group"
            )
        if self.batch_size < 1 or self.batch_size % self.group_size:
            suggestion = max(1, self.batch_size // self.group_size) * self.group_size
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a positive multiple of group_size ({self.group_size}): "
                f"each episode contributes a whole group; try batch_size={suggestion}"
            )
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots must be >= 1 or null, got {self.shots}")
        check_sampling(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_new_tokens=self.max_new_tokens
        )
        if self.max_prompt_length < 16:
            raise ConfigError(f"max_prompt_length must be >= 16 tokens, got {self.max_prompt_length}")
        if not 0 < self.epsilon < 1:
            raise ConfigError(f"epsilon must be in (0, 1), got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ConfigError(f"epsilon_high must be > 0 or null, got {self.epsilon_high}")
        if self.beta < 0:
            raise ConfigError(f"beta (KL coefficient) must be >= 0, got {self.beta}")
        if self.num_iterations < 1:
            raise ConfigError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.logging_steps < 1:
            raise ConfigError(f"logging_steps must be >= 1, got {self.logging_steps}")
        if self.save_steps < 0:
            raise ConfigError(f"save_steps must be >= 0, got {self.save_steps}")
        if not self.output_dir:
            raise ConfigError("output_dir must name a directory")

    @property
    def episodes_per_step(self) -> int:
        return self.batch_size // self.group_size

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
