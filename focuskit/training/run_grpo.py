"""`train_grpo(config) -> GRPOResult`: FOCUS stage 2, from an SFT checkpoint and episode files to a saved model.

Cheap checks come first (config values, then files, then episodes against the prompt length), then the model is
loaded (4-bit when asked), the SFT adapter (if the checkpoint is one) is merged so the reference policy is exactly
the SFT model, and `FocusGRPOTrainer` (TRL's GRPOTrainer) trains fresh LoRA adapters on top.

Output directory:
    focuskit_grpo.yaml   the run's settings (fields that differ from the defaults)
    metrics.jsonl        one line of TRL's metrics plus focuskit's diagnostics per logged step
    reference/           the merged SFT model (only when the start checkpoint was a LoRA adapter)
    checkpoint-N/        TRL/Trainer checkpoints every `save_steps`: adapters (loadable with `load_vlm`; their base
                         is the start model), optimizer, scheduler, RNG and trainer state for `resume_from_checkpoint`
    final/               the trained model (adapters, or merged weights with `save_merged`)

Multi-GPU: `accelerate launch [--config_file ...] -m focuskit.cli.main train grpo --config ...`; TRL's trainer handles
the processes (data parallel, DeepSpeed); only the main process writes the reference model and the final model.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focuskit.core.errors import ConfigError, DatasetError
from focuskit.training.grpo_config import FocusGRPOConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "focuskit_grpo.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
REFERENCE_DIR = "reference"


@dataclass
class GRPOResult:
    """Where the run saved things and what it logged."""

    output_dir: Path
    final_model: Path
    log_history: list[dict[str, float]] = field(default_factory=list)
    """One entry per logged step: TRL's metrics (reward, reward_std, frac_reward_zero_std, kl, entropy, clip_ratio/*,
    completions/*, rewards/<func>/mean, loss, grad_norm, learning_rate, step_time) plus focuskit's (iou,
    format_rate, parse_rate, box_area_ratio, reward_std_within)."""
    warnings: list[str] = field(default_factory=list)
    """Diagnostics warnings fired during the run (zero reward variance, no well-formed answers)."""
    episodes: int = 0
    dropped_absent: int = 0
    """Absent-query episodes left out because `absent_episodes` is off."""
    global_step: int = 0

    def series(self, key: str) -> list[float]:
        return [float(entry[key]) for entry in self.log_history if entry.get(key) is not None]


def _load_episodes(config: FocusGRPOConfig) -> tuple[list[Any], int]:
    from focuskit.training.sft_data import load_sft_episodes

    episodes = load_sft_episodes(config.data, config.shots)
    dropped = 0
    if not config.absent_episodes:
        kept = [ep for ep in episodes if ep.query_box is not None]
        dropped = len(episodes) - len(kept)
        episodes = kept
        if dropped:
            logger.info("dropped %d absent-query episodes (absent_episodes is off)", dropped)
    per_step = config.per_device_train_batch_size // config.group_size
    if len(episodes) < per_step:
        raise DatasetError(
            f"{len(episodes)} usable episode(s) but each step needs {per_step} (per_device_train_batch_size "
            f"{config.per_device_train_batch_size} / num_generations {config.group_size})"
            + (f"; {dropped} absent-query episodes were dropped (absent_episodes is off)" if dropped else "")
        )
    return episodes, dropped


def _load_start(config: FocusGRPOConfig) -> tuple[Any, Path]:
    """The start checkpoint as a plain (non-peft) model with the run's prompt config and a processor that resizes as
    it says, and the directory its adapters will name as their base.

    Every process merges the SFT adapter in memory (it needs the model), but only the main process writes the
    reference model (with the configured processor, so vLLM, which loads from disk, resizes the same way); the
    others wait so nobody reads a half-written directory."""
    from accelerate import PartialState

    from focuskit.models.vlms.factory import load_vlm
    from focuskit.training.grpo_data import configure_processor

    bundle = load_vlm(
        config.model,
        dtype="bfloat16" if config.bf16 else "float32",
        load_in_4bit=config.load_in_4bit,
        attn_implementation=config.attn_implementation,
    )
    prompt = copy.deepcopy(config.prompt or bundle.prompt)
    if config.absent_episodes:
        prompt.allow_absent = True
    bundle.prompt = prompt
    configure_processor(bundle.processor, bundle.family, prompt)
    base_dir = Path(config.model).expanduser().resolve()
    if hasattr(bundle.model, "merge_and_unload"):
        # An SFT adapter: merge it so "adapter disabled" means the SFT model, and keep that model on disk so the
        # GRPO adapters have a base to be loaded onto.
        bundle.model = bundle.model.merge_and_unload()
        base_dir = (Path(config.output_dir) / REFERENCE_DIR).resolve()
        state = PartialState()
        if state.is_main_process:
            logger.info("merged the SFT adapter of %s; saving the reference model to %s", config.model, base_dir)
            bundle.save(base_dir)
        state.wait_for_everyone()
    if config.use_vllm:
        check_vllm_processor(base_dir, prompt)
    return bundle, base_dir


def check_vllm_processor(base_dir: Path, prompt: Any) -> None:
    """vLLM loads the processor from the checkpoint on disk: refuse a run whose saved pixel limits differ from the
    prompt config's (vLLM would sample from other pixels than the ones the answers are scored on)."""
    from transformers import AutoProcessor

    size = dict(AutoProcessor.from_pretrained(str(base_dir)).image_processor.size)
    saved = (size.get("shortest_edge"), size.get("longest_edge"))
    if saved != (prompt.min_pixels, prompt.max_pixels):
        raise ConfigError(
            f"use_vllm: the processor saved in {base_dir} resizes to {saved[0]}..{saved[1]} pixels but the prompt "
            f"config says {prompt.min_pixels}..{prompt.max_pixels}; vLLM would see other pixels than training. Re-save "
            "the checkpoint with focuskit (VLMBundle.save after grpo_data.configure_processor) or set prompt.min_pixels"
            "/max_pixels to the saved values"
        )


def _resume_arg(config: FocusGRPOConfig) -> str | bool | None:
    value = config.resume_from_checkpoint
    if not value:
        return None
    return True if str(value).lower() in ("true", "last") else str(value)


def train_grpo(
    config: FocusGRPOConfig,
    *,
    reward_funcs: Sequence[Callable[..., list[float]]] | None = None,
    callbacks: list[Any] | None = None,
) -> GRPOResult:
    """Train with GRPO; save the final model under `config.output_dir` (see module doc). Raises `FocusError`s for
    bad configs, files, episodes or models before any step.

    `reward_funcs`: TRL-style reward functions replacing `config.reward_funcs` (weighted by `config.reward_weights`,
    one weight each, or all 1 when it is null). `callbacks`: extra transformers `TrainerCallback`s."""
    from focuskit.models.vlms.factory import VLMBundle, lora_config
    from focuskit.training.config_io import save_training_config
    from focuskit.training.grpo_callbacks import DiagnosticsCallback, MetricsFileCallback
    from focuskit.training.grpo_data import GRPOEpisodes
    from focuskit.training.grpo_trainer import FocusGRPOTrainer
    from focuskit.training.sft_config import check_4bit_available
    from focuskit.training.sft_data import validate_episodes

    config.check_paths()
    if config.load_in_4bit:
        check_4bit_available()  # before reading any episode or weight
    if config.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "use_vllm needs the vllm package (pip install vllm); set use_vllm=false to sample with generate"
        )
    episodes, dropped = _load_episodes(config)
    bundle, base_dir = _load_start(config)
    prompt = bundle.prompt
    validate_episodes(episodes, bundle.processor, bundle.family, prompt, config.max_prompt_length,
                      progress=not config.disable_tqdm)  # fmt: skip

    out = Path(config.output_dir)
    diagnostics = DiagnosticsCallback(config.diagnostics)
    data = GRPOEpisodes(episodes, bundle.processor, bundle.family, prompt, cache=config.cache_encoded)
    trainer = FocusGRPOTrainer(
        bundle.model,
        data=data,
        args=config,
        reward_funcs=reward_funcs,
        peft_config=lora_config(config.lora),
        callbacks=[diagnostics, MetricsFileCallback(out / METRICS_FILE), *(callbacks or [])],
    )
    # The adapters' base, as every checkpoint records it: the directory `load_vlm` must load them onto.
    for peft_config in trainer.accelerator.unwrap_model(trainer.model).peft_config.values():
        peft_config.base_model_name_or_path = str(base_dir)
    if trainer.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_training_config(config, out / CONFIG_FILE)
    trainer.train(resume_from_checkpoint=_resume_arg(config))

    final = out / FINAL_DIR
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if config.save_merged:
            model = model.merge_and_unload()
        VLMBundle(model, bundle.processor, bundle.family, prompt).save(final)
        save_training_config(config, final / CONFIG_FILE)
    trainer.accelerator.wait_for_everyone()
    return GRPOResult(
        output_dir=out,
        final_model=final,
        log_history=[dict(h) for h in trainer.state.log_history if "reward" in h],
        warnings=list(diagnostics.monitor.warnings),
        episodes=len(episodes),
        dropped_absent=dropped,
        global_step=trainer.state.global_step,
    )
