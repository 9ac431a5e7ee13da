"""`SFTConfig`: one supervised fine-tuning run with the attention loss, as transformers `TrainingArguments` plus ours.

`SFTConfig` *is* a `transformers.TrainingArguments`: every Trainer field (`per_device_train_batch_size`,
`gradient_accumulation_steps`, `report_to`, `save_steps`, `resume_from_checkpoint`, `deepspeed`, `optim`, ...)
works under its transformers name, and the Trainer receives the config itself, so nothing is copied by hand. It
extends transformers' class rather than TRL's `SFTConfig` because stage 1 runs on transformers' `Trainer`
(`FocusSFTTrainer` overrides `compute_loss` only) with focuskit's own episode encoding and collator: TRL's SFT
fields (dataset_text_field, packing, completion_only_loss, max_length, ...) would be accepted and do nothing.

A YAML file (`configs/sft_*.yaml`) and `key=value` overrides fill it through
`focuskit.training.config_io.load_training_config` (shared with GRPO); an unknown key is an error naming it.
`__post_init__` checks what can be checked without the model; what needs the model (attention-loss layers beyond
its depth) is checked right after loading it, before the first step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from transformers import TrainingArguments

from focuskit.core.errors import ConfigError
from focuskit.models.vlms.factory import LoraSettings
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.models.vlms.tiny import TinyVLMConfig

PAPER_WEIGHT = 0.25
"""beta of the paper's Eq. 10 (L_SFT = L_LM + beta * L_bbox) chosen on TAO 4-shot (Appendix C, Table 6: 57.1 vs 34.3
without the loss; the beta = 0.0 column is the same for every margin, which is what identifies beta as the weight)."""
PAPER_MARGIN = 0.025
"""mu of the paper's Eq. 9 chosen on TAO 4-shot (Appendix C, Table 6; grid 0.025, 0.05, 0.075)."""


@dataclass
class AttentionLossConfig:
    """The bounding-box attention loss (see `focuskit.training.attention_loss`)."""

    enabled: bool = True
    weight: float = PAPER_WEIGHT
    """beta in the paper (lambda in some write-ups): total loss = LM loss + weight * attention loss. The paper's
    TAO grid: 0, 0.01, 0.15, 0.2, 0.25 (chosen), 0.3, 0.35, 1.0."""
    margin: float = PAPER_MARGIN
    """Hinge margin mu on d_i, the difference between attention to box tokens (M) and to the rest; what d_i
    measures, and so what a margin means, is set by `normalization`. The paper: 0.025 (grid 0.025, 0.05, 0.075)."""
    normalization: Literal["mean", "mass"] = "mean"
    """How d_i compares M with the rest, for each query-image row i (A averaged over heads and layers):

    - `mean` (default): d_i = mean_{j in M} A_ij - mean_{j not in M} A_ij, Eq. 7 of the paper as printed. d_i can
      never exceed 1/|M| (all attention on M): about 0.013 with 4 supports of ~19 box tokens, below the paper's
      0.025, so at 4-shot the hinge is always active and the margin acts as a strength (gradient 2 mu per row)
      rather than a target. The default because it is what produced the paper's numbers with its mu and beta.
    - `mass`: d_i = sum_{j in M} A_ij - sum_{j not in M} A_ij, the attention *mass* on the box tokens minus the mass
      on everything else, in [-1, 1]. Any margin in (0, 1] is a reachable target (d_i = 0.25: 62.5% of the row's
      attention on the boxes), so a margin grid is meaningful; the paper's mu values are not tuned for it."""
    squared: bool = True
    """Square the hinge, max(0, margin - d_i)^2, as in the paper's Eq. 9; false: the plain hinge."""
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
        if self.normalization not in ("mean", "mass"):
            raise ConfigError(f"attention_loss.normalization must be mean or mass, got {self.normalization!r}")
        if self.margin > 1.0:
            raise ConfigError(f"attention_loss.margin must be <= 1 (d_i never exceeds 1), got {self.margin}")


@dataclass
class SFTConfig(TrainingArguments):
    """One SFT run: transformers' `TrainingArguments` (FOCUS defaults below) plus model, data, LoRA, attention loss."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "batch_size": "per_device_train_batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "epochs": "num_train_epochs",
        "lr_scheduler": "lr_scheduler_type",
        "resume": "resume_from_checkpoint (a checkpoint directory, or latest)",
        "progress_bar": "disable_tqdm (inverted)",
        "warmup_ratio": "warmup_steps (a value below 1 is a fraction of the training steps)",
    }
    """Keys of focuskit's SFT configs before they became TrainingArguments: an old YAML fails naming the new key."""

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
    """How episodes become prompts (instruction, resize limits, box format). None: the prompt config saved with the
    checkpoint (or the tiny model's), so training resizes images exactly as the model was set up to see them."""
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    """LoRA adapters (the paper: r=8, alpha=16, dropout 0, all projections); null trains all language-model weights."""
    attention_loss: AttentionLossConfig = field(default_factory=AttentionLossConfig)
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel the model is loaded with (`auto`: FlashAttention-2 when installed on a GPU, else SDPA). With
    the attention loss the language model runs focuskit's SDPA-based function (efficient) or eager attention
    (reference); this setting then applies to the vision tower."""
    load_in_4bit: bool = False
    """QLoRA, as in the paper: the base model in 4-bit NF4 (bitsandbytes, double quantization, bf16 compute) with
    LoRA adapters trained on top. Needs a CUDA GPU and bitsandbytes; refused here otherwise, before any loading."""

    # TrainingArguments fields with FOCUS's defaults (the paper's where it gives them; see docs/training.md).
    output_dir: str | None = "runs/sft"
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 1
    warmup_steps: float = 0.03
    """A value below 1 is a fraction of the training steps (the paper: 3%)."""
    max_grad_norm: float = 0.3
    lr_scheduler_type: str = "cosine"
    logging_steps: float = 10
    logging_first_step: bool = True
    save_total_limit: int | None = 2
    seed: int = 0
    remove_unused_columns: bool = False
    """Must stay false: the attention-loss masks are batch columns the model's forward does not take."""
    activation_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default_factory=lambda: {"use_reentrant": False}
    )
    """Non-reentrant checkpointing keeps the attention statistics in the autograd graph (the reentrant variant runs
    the forward under no_grad and would silently drop the attention loss's gradient)."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots must be >= 1 or null, got {self.shots}")
        if self.max_seq_length < 16:
            raise ConfigError(f"max_seq_length must be >= 16 tokens, got {self.max_seq_length}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError(
                "set num_train_epochs > 0 or max_steps > 0 "
                f"(got num_train_epochs={self.num_train_epochs}, max_steps={self.max_steps})"
            )
        if self.per_device_train_batch_size < 1:
            raise ConfigError(f"per_device_train_batch_size must be >= 1, got {self.per_device_train_batch_size}")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not self.output_dir:
            raise ConfigError("output_dir must name a directory for checkpoints")
        if isinstance(self.deepspeed, str) and not Path(self.deepspeed).is_file():
            raise ConfigError(f"deepspeed config not found: {self.deepspeed} (e.g. configs/deepspeed_zero2.json)")
        if self.remove_unused_columns is not False:
            raise ConfigError("remove_unused_columns must stay false: the attention-loss masks are batch columns")
        if self.load_in_4bit:
            check_4bit_available()
        import torch

        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        super().__post_init__()

    @property
    def attention_loss_active(self) -> bool:
        return self.attention_loss.enabled and self.attention_loss.weight > 0

    def to_dict(self) -> dict[str, Any]:
        """transformers' `to_dict` (logged by report_to integrations) with our nested sections as plain dicts."""
        plain = super().to_dict()
        return {k: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v for k, v in plain.items()}


def check_4bit_available() -> None:
    """Raise `ConfigError` unless 4-bit loading can work here: a CUDA GPU and bitsandbytes."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "load_in_4bit (QLoRA) needs a CUDA GPU for bitsandbytes' 4-bit kernels and none is available; "
            "set load_in_4bit=false to train in bf16/fp32"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("load_in_4bit (QLoRA) needs bitsandbytes: pip install 'focuskit[gpu]'")
