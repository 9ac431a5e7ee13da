"""Load a VLM checkpoint (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) with optional LoRA, bf16, 4-bit and FlashAttention-2.

Everything that can be checked without weights is checked first: the path exists, its `config.json` names a
supported architecture, 4-bit has a GPU and bitsandbytes, FlashAttention-2 is installed. A 7B download or a
15 GB load that then fails on a typo wastes far more than these checks cost. Hub ids are only tried when the
argument is not a local path, so a mistyped local directory never turns into a network request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms.families import FAMILIES, Family
from focuskit.models.vlms.prompts import PromptConfig, load_prompt_config, save_prompt_config

DType = Literal["auto", "bfloat16", "float16", "float32"]
AttnImpl = Literal["auto", "eager", "sdpa", "flash_attention_2"]

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


@dataclass
class LoraSettings:
    """LoRA on the language model's projections; defaults are the FOCUS paper's (r=8, alpha=16, dropout 0)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Projection names, matched only inside the language model (the vision tower has same-named layers)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one projection, e.g. q_proj")
        bad = [m for m in self.target_modules if not re.fullmatch(r"[A-Za-z0-9_]+", m)]
        if bad:
            raise ConfigError(f"lora.target_modules must be plain module names like q_proj, got {bad}")

    def target_regex(self) -> str:
        """A peft regex selecting the projections of the language model only."""
        names = "|".join(self.target_modules)
        return rf".*language_model.*\.({names})"


@dataclass
class VLMBundle:
    """A model with the processor that feeds it, its family, and the prompt config it was trained with."""

    model: Any
    processor: Any
    family: Family
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def save(self, directory: str | Path) -> Path:
        """Save weights, processor (tokenizer, chat template, image/video processors) and prompt config.

        The files are written into a temporary sibling directory that then replaces `directory`, so an
        interrupted save never leaves a half-written checkpoint under the real name.
        """
        directory = Path(directory)
        if directory.exists() and not _is_replaceable_checkpoint(directory):
            raise ModelError(
                f"refusing to replace {directory}: it is not empty and holds no checkpoint (no config.json or "
                "adapter_config.json); choose a new or empty directory"
            )
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            save_prompt_config(self.prompt, tmp)
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory


def _is_replaceable_checkpoint(directory: Path) -> bool:
    """Only an empty directory or a previous checkpoint may be replaced: never a folder of the user's other files."""
    if not directory.is_dir():
        return False
    return not any(directory.iterdir()) or any(
        (directory / name).is_file() for name in ("config.json", "adapter_config.json")
    )


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_local_path(name: str) -> bool:
    """Anything but a bare `org/name` is a path: absolute, relative with ./ or ../, ~, or several components."""
    return name.startswith(("/", ".", "~")) or "\\" in name or not _HUB_ID.match(name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect_checkpoint` learned from a checkpoint's JSON files, before any weights are read."""

    source: str
    """Local directory or hub id of the full model (the base model for a LoRA adapter)."""
    family: Family
    adapter: str | None = None
    """Local directory of a peft LoRA adapter to apply on top of `source`, if the path was an adapter."""
    is_local: bool = True


_EXTRA_MODEL_TYPES: dict[str, tuple[str, Family]] = {"qwen2_vl_cnn": ("focuskit.models.vlms.cnn_qwen2_vl", "qwen2_vl")}
"""focuskit's own architectures: model_type -> (module that registers it with transformers' Auto classes, family)."""


def _family_of_config(model_type: str, where: str) -> Family:
    if model_type in _EXTRA_MODEL_TYPES:
        module, family = _EXTRA_MODEL_TYPES[model_type]
        __import__(module)
        return family
    if model_type not in FAMILIES:
        raise ModelError(
            f"{where} is a {model_type or 'unknown'!r} model; supported architectures: {', '.join(FAMILIES)}"
        )
    return model_type  # type: ignore[return-value]


def inspect_checkpoint(path_or_hub_id: str | Path) -> CheckpointInfo:
    """Resolve a local path or hub id to a supported checkpoint, reading only its config (no weights).

    Local directories may hold a full model (`config.json`) or a peft LoRA adapter (`adapter_config.json`, whose
    base model is resolved in turn). Anything else raises `ModelError` naming what was found.
    """
    name = str(path_or_hub_id)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file; expected a checkpoint directory with config.json")
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            adapter_cfg = _read_json(path / "adapter_config.json")
            base = adapter_cfg.get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{path}/adapter_config.json does not name its base model (base_model_name_or_path)")
            base_info = inspect_checkpoint(base)
            return CheckpointInfo(source=base_info.source, family=base_info.family, adapter=str(path),
                                  is_local=base_info.is_local)  # fmt: skip
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json: not a Hugging Face checkpoint")
        cfg = _read_json(path / "config.json")
        return CheckpointInfo(source=str(path), family=_family_of_config(str(cfg.get("model_type", "")), str(path)))
    if _looks_like_local_path(name):
        raise ModelError(f"model path not found: {path}")
    # A hub id: fetch only the config (small) to check the architecture before any weights.
    from transformers import AutoConfig

    try:
        cfg_obj = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load model {name!r}: not a local directory, and the hub config could not be fetched ({exc})"
        ) from None
    return CheckpointInfo(source=name, family=_family_of_config(str(cfg_obj.model_type), name), is_local=False)


def _torch_dtype(dtype: DType) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in table:
        raise ConfigError(f"dtype must be one of auto, {', '.join(table)}; got {dtype!r}")
    return table[dtype]


def resolve_attn_implementation(attn_implementation: AttnImpl | None) -> str | None:
    """The attention kernel to load with; FlashAttention-2 only when requested and usable.

    "flash_attention_2" is strict (a `ModelError` says what is missing); "auto" picks it when it is installed and
    a GPU is present, else SDPA. Attention weights (for analysis) need "eager".
    """
    import torch
    from transformers.utils import is_flash_attn_2_available

    if attn_implementation is None:
        return None
    fa2_ok = torch.cuda.is_available() and is_flash_attn_2_available()
    if attn_implementation == "auto":
        return "flash_attention_2" if fa2_ok else "sdpa"
    if attn_implementation == "flash_attention_2" and not fa2_ok:
        missing = "a CUDA GPU" if not torch.cuda.is_available() else "the flash-attn package (pip install flash-attn)"
        raise ModelError(
            f"attn_implementation='flash_attention_2' needs {missing}; use 'sdpa' or 'auto' to fall back to SDPA"
        )
    if attn_implementation not in ("eager", "sdpa", "flash_attention_2"):
        raise ConfigError(
            f"attn_implementation must be auto, eager, sdpa or flash_attention_2; got {attn_implementation!r}"
        )
    return attn_implementation


def _quantization_config(load_in_4bit: bool, dtype: Any) -> Any:
    if not load_in_4bit:
        return None
    import torch

    if not torch.cuda.is_available():
        raise ModelError("load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); none is available here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("load_in_4bit needs bitsandbytes: pip install 'focuskit[gpu]'") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16,
    )


def lora_config(lora: LoraSettings) -> Any:
    """The peft `LoraConfig` of `lora`: adapters on the language model's projections only (never the vision tower).

    One builder for SFT (`apply_lora`) and GRPO (TRL wraps the policy itself from this config).
    """
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_regex(),
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(model: Any, lora: LoraSettings) -> Any:
    """Wrap `model` with fresh LoRA adapters on the language model's projections (peft)."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(lora))
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ModelError(f"cannot apply LoRA to {type(model).__name__}: {exc}") from None


def load_vlm(
    path_or_hub_id: str | Path,
    *,
    lora: LoraSettings | None = None,
    dtype: DType = "auto",
    load_in_4bit: bool = False,
    attn_implementation: AttnImpl | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> VLMBundle:
    """Load a supported VLM and its processor, optionally with new LoRA adapters, ready for training or inference.

    A directory holding a peft adapter loads its base model and applies the adapter (trainable when `lora` is
    given, frozen otherwise). The prompt config saved with the checkpoint (if any) comes back in `bundle.prompt`.
    `dtype="auto"` is bf16 on a GPU that supports it and float32 on CPU.
    """
    info = inspect_checkpoint(path_or_hub_id)  # before importing transformers: bad paths fail fast

    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_dtype = _torch_dtype(dtype)
    quant = _quantization_config(load_in_4bit, torch_dtype)
    attn = resolve_attn_implementation(attn_implementation)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForImageTextToText.from_pretrained(info.source, **kwargs)
        processor_source = info.adapter if info.adapter and _has_processor(Path(info.adapter)) else info.source
        processor = AutoProcessor.from_pretrained(processor_source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {info.source!r}: {exc}") from None
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if info.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, info.adapter, is_trainable=lora is not None)
    elif lora is not None:
        model = apply_lora(model, lora)
    prompt = None
    for directory in (info.adapter, info.source if info.is_local else None):
        if directory is not None and prompt is None:
            prompt = load_prompt_config(directory)
    if lora is None:
        model.eval()
    return VLMBundle(model=model, processor=processor, family=info.family, prompt=prompt or PromptConfig())


def _has_processor(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
