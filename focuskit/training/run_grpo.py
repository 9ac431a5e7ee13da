"""`train_grpo(config) -> GRPOResult`: FOCUS stage 2, from an SFT checkpoint and episode files to a saved model.

Cheap checks come first (config values, then files, then episodes against the prompt length), then the model is
loaded, the SFT adapter (if the checkpoint is one) is merged so the reference policy is exactly the SFT model, fresh
LoRA adapters are added, and the reference is checked against the start policy before step one.

Output directory:
    focuskit_grpo.yaml   the run's config
    metrics.jsonl        one line of diagnostics per logged step
    reference/           the merged SFT model (only when the start checkpoint was a LoRA adapter)
    checkpoint-N/        LoRA adapters every `save_steps` (loadable with `load_vlm`; their base is the start model)
    final/               the trained model (adapters, or merged weights with `save_merged`)

Multi-GPU: `accelerate launch [--config_file ...] -m focuskit.cli.main train grpo --config ...` runs this function in
every process with one shared `Accelerator` (data parallel, see `grpo_trainer`); only the main process writes files,
and the others wait for it around every save.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focuskit.core.config import save_config
from focuskit.core.io import atomic_write_text
from focuskit.training.grpo_config import GRPOConfig

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
    warnings: list[str] = field(default_factory=list)
    """Diagnostics warnings fired during the run (zero reward variance, no well-formed answers)."""
    episodes: int = 0
    dropped_absent: int = 0
    """Absent-query episodes left out because `absent_episodes` is off."""
    reference_diff: float = 0.0
    """Max |log p_policy - log p_reference| before training (0 for fresh adapters)."""

    def series(self, key: str) -> list[float]:
        return [float(entry[key]) for entry in self.log_history if key in entry]


def _load_start(config: GRPOConfig, accelerator: Any) -> tuple[Any, Path]:
    """The start checkpoint as a plain (non-peft) model, and the directory its adapters will name as their base.

    Every process merges the SFT adapter in memory (it needs the model), but only the main process writes the
    reference model; the others wait so nobody reads a half-written directory."""
    from focuskit.models.vlms.factory import load_vlm

    bundle = load_vlm(
        config.model,
        dtype="bfloat16" if config.bf16 else "float32",
        attn_implementation=config.attn_implementation,
    )
    base_dir = Path(config.model).expanduser().resolve()
    if hasattr(bundle.model, "merge_and_unload"):
        # An SFT adapter: merge it so "adapter disabled" below means the SFT model, and keep that model on disk so
        # the GRPO adapters have a base to be loaded onto.
        bundle.model = bundle.model.merge_and_unload()
        base_dir = (Path(config.output_dir) / REFERENCE_DIR).resolve()
        if accelerator.is_main_process:
            logger.info("merged the SFT adapter of %s; saving the reference model to %s", config.model, base_dir)
            bundle.save(base_dir)
        accelerator.wait_for_everyone()
    return bundle, base_dir


def _save(
    bundle: Any, model: Any, directory: Path, config: GRPOConfig, base_dir: Path, *, merged: bool, accelerator: Any
) -> None:
    """Save `model` (the unwrapped peft model) with the bundle's processor and prompt, from the main process only.

    All processes must call this: they wait for each other before (every process finished the step) and after
    (nobody moves on, or exits, before the files exist)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_model(bundle, model, directory, config, base_dir, merged=merged)
    accelerator.wait_for_everyone()


def _write_model(bundle: Any, model: Any, directory: Path, config: GRPOConfig, base_dir: Path, *, merged: bool) -> None:
    """Write adapters that name `base_dir` as their base (so `load_vlm` finds it), or merged full weights."""
    from focuskit.models.vlms.factory import VLMBundle

    if merged:
        model = model.merge_and_unload()
    else:
        for peft_cfg in model.peft_config.values():
            peft_cfg.base_model_name_or_path = str(base_dir)
    VLMBundle(model, bundle.processor, bundle.family, bundle.prompt).save(directory)
    save_config(config, directory / CONFIG_FILE)


def train_grpo(config: GRPOConfig) -> GRPOResult:
    """Train with GRPO; save the final model under `config.output_dir` (see module doc). Raises `FocusError`s for
    bad configs, files, episodes or models before any step."""
    config.check_paths()
    import copy

    from accelerate import Accelerator
    from transformers import set_seed

    from focuskit.models.vlms.factory import apply_lora
    from focuskit.training.grpo_trainer import GRPOTrainer, check_reference
    from focuskit.training.sft_data import load_sft_episodes, validate_episodes

    # One Accelerator per process, made before the model so `accelerate launch` picks the device and backend
    # (DDP or DeepSpeed) from its config; one micro-batch per episode (group) of a step's per-process batch.
    accelerator = Accelerator(
        mixed_precision="bf16" if config.bf16 else "no",
        gradient_accumulation_steps=config.episodes_per_step,
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps, not steps x processes
    )
    set_seed(config.seed)
    episodes = load_sft_episodes(config.data, config.shots)
    dropped = 0
    if not config.absent_episodes:
        kept = [ep for ep in episodes if ep.query_box is not None]
        dropped = len(episodes) - len(kept)
        episodes = kept
        if dropped:
            logger.info("dropped %d absent-query episodes (absent_episodes is off)", dropped)
    if len(episodes) < config.episodes_per_step:
        from focuskit.core.errors import DatasetError

        raise DatasetError(
            f"{len(episodes)} usable episode(s) but each step needs {config.episodes_per_step} "
            f"(batch_size {config.batch_size} / group_size {config.group_size})"
            + (f"; {dropped} absent-query episodes were dropped (absent_episodes is off)" if dropped else "")
        )

    bundle, base_dir = _load_start(config, accelerator)
    prompt = copy.deepcopy(config.prompt or bundle.prompt)
    if config.absent_episodes:
        prompt.allow_absent = True
    bundle.prompt = prompt
    validate_episodes(
        episodes,
        bundle.processor,
        bundle.family,
        prompt,
        config.max_prompt_length,
        progress=config.progress_bar and accelerator.is_main_process,
    )

    bundle.model = apply_lora(bundle.model, config.lora)
    if config.gradient_checkpointing:
        bundle.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        bundle.model.enable_input_require_grads()

    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / CONFIG_FILE)
    trainer = GRPOTrainer(bundle, config, episodes, accelerator=accelerator)
    reference_diff = check_reference(trainer, episodes[0])

    lines: list[str] = []

    def write_metrics(values: dict[str, float]) -> None:
        lines.append(json.dumps({k: (None if v != v else round(v, 6)) for k, v in values.items()}))
        atomic_write_text(out / METRICS_FILE, "\n".join(lines) + "\n")

    def on_step(step: int) -> None:
        if config.save_steps and step % config.save_steps == 0 and step < config.max_steps:
            model = accelerator.unwrap_model(trainer.model)
            _save(bundle, model, out / f"checkpoint-{step}", config, base_dir, merged=False, accelerator=accelerator)

    trainer.train(on_log=write_metrics, on_step=on_step)  # on_log runs on the main process only
    final = out / FINAL_DIR
    model = accelerator.unwrap_model(trainer.model)
    _save(bundle, model, final, config, base_dir, merged=config.save_merged, accelerator=accelerator)
    return GRPOResult(
        output_dir=out,
        final_model=final,
        log_history=trainer.log_history,
        warnings=list(trainer.monitor.warnings),
        episodes=len(episodes),
        dropped_absent=dropped,
        reference_diff=reference_diff,
    )
