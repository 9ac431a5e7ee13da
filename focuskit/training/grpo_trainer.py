"""`FocusGRPOTrainer`: TRL's `GRPOTrainer` with FOCUS prompts, faithful rollouts and localization diagnostics.

Everything GRPO is TRL's: sampling, reward normalisation (`scale_rewards`), the loss types (`grpo`, `bnpo`, `dr_grpo`,
`dapo`, ...), clipping (`epsilon`, `epsilon_high`), the KL to the reference (`beta`), `mask_truncated_completions`,
vLLM generation, logging (`frac_reward_zero_std`, entropy, clip ratios) and `Trainer`'s checkpoints and resume. With
a `peft_config`, TRL wraps the model in fresh LoRA adapters and computes the reference log-probs with the adapters
disabled (`use_adapter(model, None)`), so the reference is exactly the start checkpoint and no copy is kept.

What differs, each a small override:

- `_tokenize_prompts`: prompt tokens and pixels come from `encode_episode` with the checkpoint's `PromptConfig`,
  exactly what SFT and evaluation use (`_generate_and_score_completions` only records which episode rows the batch
  holds, as TRL records its environments). TRL's forward-pass rendering (from the row's messages) is made identical
  by `grpo_data.configure_processor` and checked by `grpo_data.check_prompt_identity` before step one.
- `_generate`: answers are decoded with special tokens kept. TRL decodes with `skip_special_tokens=True`, which
  deletes Qwen2-VL's `<|box_start|>`/`<|box_end|>` (special tokens), so no answer would ever match the box form.
- `_generate_single_turn`: rollouts run with the checkpoint's generation defaults swapped out
  (`models.vlms.generation.checkpoint_generation_defaults_disabled`). transformers fills every option the trainer
  leaves unset from the checkpoint's `generation_config` (Qwen2-VL-Instruct ships `repetition_penalty` 1.05, `top_k`,
  `top_p`; TRL leaves e.g. `min_p` and `no_repeat_ngram_size` unset); a leaked option samples from another
  distribution than the one whose log-probabilities enter the ratio.
- `_calculate_rewards`: after TRL's rewards, logs focuskit's diagnostics: `parse_rate`, `format_rate`, `iou`,
  `box_area_ratio` (median answer/target area: IoU rewards hedging with larger boxes) and `reward_std_within`.
- `_save`: checkpoints also carry the prompt config, so `load_vlm` and evaluation read them like SFT checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import trl
from accelerate.utils import gather_object

from focuskit.core.errors import ModelError
from focuskit.models.vlms.encoding import TOKEN_KEYS
from focuskit.models.vlms.generation import (
    checkpoint_generation_defaults_disabled,
    stop_token_ids,
    unwrap_model,
    vision_token_ids,
)
from focuskit.models.vlms.prompts import save_prompt_config
from focuskit.training.grpo_config import FocusGRPOConfig
from focuskit.training.grpo_data import GRPOEpisodes, check_prompt_identity, configure_processor
from focuskit.training.rewards import (
    REWARD_FUNCS,
    box_area_ratios,
    completion_text,
    format_reward,
    iou_reward,
    parsed_ok,
)

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]


class FocusGRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPO trainer on FOCUS episodes (see the module docstring for what is overridden and why).

    `model`: the start model (not yet LoRA-wrapped; pass `peft_config` to train adapters whose disabled state is the
    reference). `data`: the episodes with the processor and prompt config. `reward_funcs` default to the config's
    `reward_funcs` names (`rewards.REWARD_FUNCS`), weighted by its `reward_weights`.
    """

    def __init__(
        self,
        model: Any,
        *,
        data: GRPOEpisodes,
        args: FocusGRPOConfig,
        reward_funcs: Sequence[RewardFunc] | None = None,
        peft_config: Any = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        configure_processor(data.processor, data.family, data.prompt)
        check_prompt_identity(data)
        self.focus_data = data
        self._focus_rows: list[dict[str, Any]] | None = None
        funcs = list(reward_funcs) if reward_funcs is not None else [REWARD_FUNCS[n] for n in args.reward_funcs]
        super().__init__(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=data.to_dataset(),
            processing_class=data.processor,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        self._set_rollout_tokens()

    def _set_rollout_tokens(self) -> None:
        """Stop at the family's end-of-turn token and never sample vision tokens, whatever the checkpoint declares
        (`models.vlms.generation`: the same stop and suppressed ids as evaluation)."""
        tok = self._tokenizer
        stops = list(dict.fromkeys([*self.eos_token_ids, *stop_token_ids(tok, self.focus_data.family)]))
        self.eos_token_ids = stops
        suppress = vision_token_ids(tok)
        if not self.use_vllm:
            self.generation_config.eos_token_id = stops
            self.generation_config.suppress_tokens = suppress
            self.generation_kwargs.update(eos_token_id=stops, suppress_tokens=suppress)

    # --- prompts: encode_episode ----------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._focus_rows = inputs  # the rows behind this batch's prompts, for `_tokenize_prompts`
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._focus_rows = None
            self.focus_data.release([int(r["episode_index"]) for r in inputs])

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], list[Any], dict[str, Any]]:
        rows = self._focus_rows
        if rows is None or len(rows) != len(prompts):
            raise ModelError("FocusGRPOTrainer: prompts must come from the episode rows of the current batch")
        encoded = [self.focus_data.encoded(int(r["episode_index"])) for r in rows]
        prompt_ids = [e.inputs["input_ids"][0].tolist() for e in encoded]
        fields: dict[str, Any] = {}
        for key in encoded[0].inputs:
            if key in ("input_ids", "attention_mask"):
                continue
            if key in TOKEN_KEYS:  # per-token: TRL left-pads lists of lists
                fields[key] = [e.inputs[key][0].tolist() for e in encoded]
            else:
                fields[key] = torch.cat([e.inputs[key] for e in encoded], dim=0)
        return prompt_ids, [r["images"] for r in rows], fields

    # --- rollouts ---------------------------------------------------------------------------------------------------
    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        with checkpoint_generation_defaults_disabled(unwrap_model(self.model)):
            return super()._generate_single_turn(*args, **kwargs)

    def _generate(self, prompts: list[Any]) -> tuple[Any, ...]:
        out = list(super()._generate(prompts))
        completion_ids = out[1]
        stops = set(self.eos_token_ids) | {self._tokenizer.pad_token_id}
        texts = [
            self._tokenizer.decode([t for t in ids if t not in stops], skip_special_tokens=False)
            for ids in completion_ids
        ]
        out[3] = [[{"role": "assistant", "content": text}] for text in texts]
        return tuple(out)

    # --- diagnostics ------------------------------------------------------------------------------------------------
    def _calculate_rewards(
        self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any], completion_ids_list: Any
    ) -> torch.Tensor:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._log_diagnostics(inputs, completions, rewards_per_func)
        return rewards_per_func

    def _log_diagnostics(self, inputs: list[dict[str, Any]], completions: list[Any], rewards_per_func: Any) -> None:
        """Parse, format and IoU rates over all processes, the median area ratio and the within-group reward std."""
        mode = "train" if self.model.training else "eval"
        texts = [completion_text(c) for c in completions]
        family = inputs[0]["family"]
        columns = {k: [row[k] for row in inputs] for k in ("solution", "image_size", "resized_size", "allow_absent")}
        fmt = format_reward(texts, family=family, allow_absent=columns["allow_absent"],
                            image_size=columns["image_size"], resized_size=columns["resized_size"])  # fmt: skip
        ious = iou_reward(texts, columns["solution"], family=family, image_size=columns["image_size"],
                          resized_size=columns["resized_size"])  # fmt: skip
        parsed = parsed_ok(texts, family=family)
        local = torch.tensor([sum(parsed), sum(fmt), sum(ious), len(texts)], dtype=torch.float64)
        totals = self.accelerator.gather(local.to(self.accelerator.device)).view(-1, 4).sum(dim=0).cpu()
        n = float(totals[3]) or 1.0
        metrics = self._metrics[mode]
        metrics["parse_rate"].append(float(totals[0]) / n)
        metrics["format_rate"].append(float(totals[1]) / n)
        metrics["iou"].append(float(totals[2]) / n)
        ratios = gather_object(box_area_ratios(texts, columns["solution"], family=family))  # flat, all processes
        metrics["box_area_ratio"].append(float(torch.tensor(ratios).median()) if ratios else float("nan"))
        weights = self.reward_weights.to(rewards_per_func.device)
        total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        group = self.num_generations if mode == "train" else self.num_generations_eval
        metrics["reward_std_within"].append(float(total.view(-1, group).std(dim=1, unbiased=False).mean()))

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict)
        save_prompt_config(self.focus_data.prompt, output_dir or self.args.output_dir)
