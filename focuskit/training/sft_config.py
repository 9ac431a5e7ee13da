"""`SFTConfig`: everything one supervised fine-tuning run with the attention loss needs, as data.

A YAML file (`configs/sft_*.yaml`) and `key=value` overrides on the command line fill the same dataclass through
`focuskit.core.config.load_config`; an unknown key is an error. `__post_init__` checks what can be checked without
the model; what needs the model (attention-loss layers beyond its depth) is checked right after loading it, before
the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import LoraSettings
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.models.vlms.tiny import TinyVLMConfig


@dataclass
class AttentionLossConfig:
    """The bounding-box attention loss (see `focuskit.training.attention_loss`)."""

    enabled: bool = True
    weight: float = 0.05
    """lambda in the paper: total loss = LM loss + weight * attention loss. Paper grid: 0.025, 0.05, 0.075."""
    margin: float = 0.01
    """Hinge margin on (mean attention to box tokens - mean attention to the rest). The difference can never exceed
    1/|M| (all attention on M), so with ~20 box tokens any margin above ~0.05 keeps the hinge always active."""
    layers: Literal["first_k", "last_k", "all"] = "first_k"
    k: int = 5
    """How many layers `first_k` / `last_k` select (the paper: the first 5)."""
    implementation: Literal["efficient", "eager"] = "efficient"
    """`efficient` gets the statistic from the SDPA call itself (no attention maps); `eager` is the reference that
    materializes every layer's full attention map (the paper's way, for checking)."""

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"attention_loss.weight (lambda) must be >= 0, got {self.weight}")
        if self.margin < 0:
            raise ConfigError(f"attention_loss.margin must be >= 0, got {self.margin}")
        if self.k < 1:
            raise ConfigError(f"attention_loss.k must be >= 1, got {self.k}")


@dataclass
class SFTConfig:
    """One SFT run: model, data, LoRA, optimisation, attention loss, checkpoints."""

    model: str = "tiny"
    """A local checkpoint directory or hub id (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision), or `tiny` for the offline
    random-weight Qwen2-VL (sized by `tiny`) used in tests and smoke runs."""
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    """Sizes of the tiny model; used only when `model` is `tiny`."""
    data: list[str] = field(default_factory=list)
    """Episode files (focuskit `.jsonl`, IPLoc `.json`, or folders of IPLoc files); all are concatenated."""
    shots: int | None = None
    """Use only the first `shots` supports of each episode (None: all of them)."""
    max_seq_length: int = 8192
    """Episodes longer than this (text + visual tokens) are refused before training: lower prompt.max_pixels or
    shots instead of letting a long episode run the GPU out of memory at step 3,000."""
    cache_encoded: bool = False
    """Keep encoded episodes in RAM after first use: for small datasets trained for many epochs (tiny runs)."""
    prompt: PromptConfig | None = None
    """How episodes become prompts (resize limits, box format). None: the prompt config saved with the checkpoint
    (or the tiny model's), so training resizes images exactly as the model was set up to see them."""
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    """LoRA adapters (the paper: r=8, alpha=16, dropout 0, all projections); null trains all language-model weights."""
    attention_loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)

    output_dir: str = "runs/sft"
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1
    """Optimizer steps; > 0 overrides `epochs`."""
    batch_size: int = 1
    """Episodes per device per forward."""
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    max_grad_norm: float = 0.3
    weight_decay: float = 0.0
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    bf16: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel the model is loaded with (`auto`: FlashAttention-2 when installed on a GPU, else SDPA). With
    the attention loss the language model runs focuskit's SDPA-based function (efficient) or eager attention
    (reference); this setting then applies to the vision tower."""
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume: str | None = None
    """A checkpoint directory to resume from, or `latest` for the newest `checkpoint-*` in `output_dir`."""
    seed: int = 0
    deepspeed: str | None = None
    """A DeepSpeed JSON config (e.g. configs/deepspeed_zero2.json) for multi-GPU runs under `accelerate launch`."""
    report_to: list[str] = field(default_factory=list)
    """Trainer integrations to log to (tensorboard, wandb, ...); empty logs to the console and trainer_state.json."""
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots must be >= 1 or null, got {self.shots}")
        if self.max_seq_length < 16:
            raise ConfigError(f"max_seq_length must be >= 16 tokens, got {self.max_seq_length}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError(f"set epochs > 0 or max_steps > 0 (got epochs={self.epochs}, max_steps={self.max_steps})")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 1:
            raise ConfigError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.logging_steps < 1 or self.save_steps < 1:
            raise ConfigError(
                f"logging_steps and save_steps must be >= 1, got {self.logging_steps} and {self.save_steps}"
            )
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or null, got {self.save_total_limit}")
        if not self.output_dir:
            raise ConfigError("output_dir must name a directory for checkpoints")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise ConfigError(f"deepspeed config not found: {self.deepspeed} (e.g. configs/deepspeed_zero2.json)")

    @property
    def attention_loss_active(self) -> bool:
        return self.attention_loss.enabled and self.attention_loss.weight > 0
