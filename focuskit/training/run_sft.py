"""`train_sft(config) -> SFTResult`: one SFT run, from episode files to a saved model, checked before step one.

Order matters for users with big models: everything that can fail cheaply (config, data files, boxes, sequence
lengths, attention-loss layers vs the model's depth) is checked from configs and image headers before the weights
are loaded, and the weights are loaded before the first step. The CLI (`focuskit train sft`) and the benchmarks call
this function; it prints nothing itself beyond the trainer's progress bar and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focuskit.core.errors import ConfigError, ModelError
from focuskit.models.vlms.factory import VLMBundle
from focuskit.models.vlms.families import Family
from focuskit.models.vlms.prompts import PromptConfig
from focuskit.training.config_io import save_training_config
from focuskit.training.sft_config import SFTConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "focuskit_sft.yaml"
"""The run's `SFTConfig`, saved in the output directory and in every checkpoint."""
FINAL_DIR = "final"
"""Subdirectory of `output_dir` holding the trained model, loadable with `load_vlm` / `--engine vlm --model`."""


@dataclass
class SFTResult:
    """Where the run saved things and what it logged."""

    output_dir: Path
    final_model: Path
    global_step: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    attention_skipped: int = 0
    """Examples the attention loss skipped (no box or query tokens); they still got the LM loss."""

    def series(self, key: str) -> list[float]:
        """A logged metric over the run (`lm_loss`, `attn_loss`, `attn_margin`, `loss`, `learning_rate`, ...)."""
        return [float(entry[key]) for entry in self.log_history if key in entry]


@dataclass(frozen=True)
class SFTHooks:
    """Extension points for research variants of the SFT objective, without a second copy of `train_sft`.

    `benchmarks/toy/grounding.py` uses them to add attention supervision to the toy's pretraining stand-in. Each
    default leaves `train_sft` exactly as the paper's recipe.
    """

    trainer_class: type | None = None
    """A `FocusSFTTrainer` subclass (None: `FocusSFTTrainer`); it receives the same arguments."""
    wrap_dataset: Callable[[Any], Any] | None = None
    """`SFTDataset -> Dataset`: adds per-example tensors (the wrapper keeps `episodes` and the encoding)."""
    data_collator: Callable[[Any], dict[str, Any]] | None = None
    """Batches what `wrap_dataset` yields (None: `collate_for_sft`)."""
    attn_implementation: str | None = None
    """Language-model attention to train with (e.g. "eager" for a loss that reads attention maps)."""


@dataclass
class _Setup:
    """What the pre-flight checks learned, before any weights are loaded."""

    family: Family
    prompt: PromptConfig
    processor: Any
    num_layers: int
    bundle: VLMBundle | None = None
    """Already built for the tiny model (it costs nothing); loaded later for real checkpoints."""


def _prepare(config: SFTConfig) -> _Setup:
    if config.model == "tiny":
        from focuskit.models.vlms.tiny import build_tiny_vlm

        bundle = build_tiny_vlm(config.tiny, attn_implementation="sdpa")
        prompt = config.prompt or bundle.prompt
        bundle.prompt = prompt
        return _Setup(bundle.family, prompt, bundle.processor, config.tiny.num_layers, bundle)
    from transformers import AutoConfig, AutoProcessor

    from focuskit.models.vlms.factory import inspect_checkpoint
    from focuskit.models.vlms.prompts import load_prompt_config

    info = inspect_checkpoint(config.model)
    try:
        model_config = AutoConfig.from_pretrained(info.source)
        processor = AutoProcessor.from_pretrained(info.adapter or info.source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config or processor of {config.model!r}: {exc}") from None
    prompt = config.prompt
    for directory in (info.adapter, info.source if info.is_local else None):
        if prompt is None and directory is not None:
            prompt = load_prompt_config(directory)
    text = getattr(model_config, "text_config", None) or model_config
    return _Setup(info.family, prompt or PromptConfig(), processor, int(text.num_hidden_layers))


def _load_model(config: SFTConfig, setup: _Setup) -> VLMBundle:
    from focuskit.models.vlms.factory import apply_lora, load_vlm

    if setup.bundle is not None:
        bundle = setup.bundle
        if config.lora is not None:
            bundle.model = apply_lora(bundle.model, config.lora)
        return bundle
    bundle = load_vlm(
        config.model,
        lora=config.lora,
        dtype="bfloat16" if config.bf16 else "float32",
        load_in_4bit=config.load_in_4bit,
        attn_implementation=config.attn_implementation,
    )
    bundle.prompt = setup.prompt
    return bundle


def _resume_path(config: SFTConfig) -> str | None:
    resume = config.resume_from_checkpoint
    if resume is None:
        return None
    if resume == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        out = Path(config.output_dir)
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise ConfigError(f"resume_from_checkpoint=latest but {out} holds no checkpoint-* directory to resume from")
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"resume_from_checkpoint not found: {resume} (a checkpoint-N directory, or 'latest')")
    return resume


def _checkpoint_callback(config: SFTConfig, prompt: PromptConfig) -> Any:
    from transformers import TrainerCallback

    from focuskit.models.vlms.prompts import save_prompt_config

    class _SaveFocusFiles(TrainerCallback):
        """Every checkpoint carries the prompt config and the run config, so it can be evaluated or resumed alone."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                save_prompt_config(prompt, checkpoint)
                save_training_config(config, checkpoint / CONFIG_FILE)

    return _SaveFocusFiles()


def train_sft(config: SFTConfig, hooks: SFTHooks | None = None) -> SFTResult:
    """Train with LM loss + lambda * attention loss; save checkpoints and the final model under `config.output_dir`.

    `hooks` swaps in a trainer subclass, dataset wrapper or collator (see `SFTHooks`); None is the paper's recipe.
    Raises `FocusError`s for bad data, configs or models before any training step.
    """
    from transformers import set_seed

    from focuskit.training.attention_loss import restore_attention, select_layers, use_box_attention
    from focuskit.training.sft_data import SFTDataset, collate_for_sft, load_sft_episodes, validate_episodes
    from focuskit.training.sft_trainer import FocusSFTTrainer

    set_seed(config.seed)
    resume = _resume_path(config)
    loss_cfg = config.attention_loss
    episodes = load_sft_episodes(config.data, config.shots)
    setup = _prepare(config)
    layers = select_layers(loss_cfg.layers, loss_cfg.k, setup.num_layers) if config.attention_loss_active else ()
    summary = validate_episodes(
        episodes, setup.processor, setup.family, setup.prompt, config.max_seq_length, progress=not config.disable_tqdm
    )
    logger.info("%d episodes, up to %d visual tokens each", summary.episodes, summary.max_visual_tokens)

    bundle = _load_model(config, setup)
    model = bundle.model
    hooks = hooks or SFTHooks()
    if config.attention_loss_active:
        use_box_attention(model, loss_cfg.implementation)
    if hooks.attn_implementation is not None:
        if config.attention_loss_active and loss_cfg.implementation == "efficient":
            raise ConfigError("an SFT hook that sets the attention needs attention_loss.implementation=eager")
        restore_attention(model, hooks.attn_implementation)
    dataset: Any = SFTDataset(
        episodes, bundle.processor, bundle.family, setup.prompt, config.max_seq_length, cache=config.cache_encoded
    )
    if hooks.wrap_dataset is not None:
        dataset = hooks.wrap_dataset(dataset)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_training_config(config, out / CONFIG_FILE)
    trainer_class = hooks.trainer_class or FocusSFTTrainer
    trainer = trainer_class(
        model=model,
        args=config,  # SFTConfig is a TrainingArguments: no fields copied by hand
        train_dataset=dataset,
        data_collator=hooks.data_collator or collate_for_sft,
        processing_class=bundle.processor,
        callbacks=[_checkpoint_callback(config, setup.prompt)],
        attention_loss=loss_cfg,
        attention_layers=layers,
    )
    trainer.train(resume_from_checkpoint=resume)

    restore_attention(model)
    final = out / FINAL_DIR
    if trainer.is_world_process_zero():
        _save_final(bundle, config, final)
    return SFTResult(
        output_dir=out,
        final_model=final,
        global_step=int(trainer.state.global_step),
        log_history=list(trainer.state.log_history),
        attention_skipped=trainer.attention_skipped,
    )


def _save_final(bundle: VLMBundle, config: SFTConfig, directory: Path) -> None:
    """The tiny model is saved merged (it has no base checkpoint to point an adapter at); real models as adapters."""
    if config.model == "tiny" and config.lora is not None:
        bundle = VLMBundle(bundle.model.merge_and_unload(), bundle.processor, bundle.family, bundle.prompt)
    bundle.save(directory)
    save_training_config(config, directory / CONFIG_FILE)
