"""A compact GRPO trainer for in-context localization prompts, with diagnostics that say when it is not learning.

Why not TRL's `GRPOTrainer`: it renders prompts itself from chat messages through the processor's
`apply_chat_template(tokenize=True)`, with the processor's default image resizing. focuskit's prompts come from
`encode_episode`, which resizes with the checkpoint's `PromptConfig` (`min_pixels`/`max_pixels`): Qwen2.5-VL boxes
are pixels of the *resized* image, so a different resize silently changes the targets, and the visual token count
changes with it. Rather than keep two prompt paths in step, this trainer uses the exact inputs SFT and evaluation
use, and the rest of GRPO is small:

1. rollout: for each episode, sample G answers (one batched `generate` over the step's episodes);
2. reward each answer (`rewards.iou_reward`, `rewards.format_reward`, weighted), normalize within each group;
3. loss per answer token: -min(r * A, clip(r, 1 - eps, 1 + eps_high) * A) + beta * KL_k3(policy || reference),
   where r is the ratio to the sampling policy and the reference is the same model with its LoRA adapter disabled
   (`with model.disable_adapter():`), so no second copy of the weights exists.

Every step logs the mean reward, the within-group reward std (warning when it stays ~0: all answers in a group score
the same, advantages are 0, and nothing is learned), the format-valid rate, mean IoU, KL, and the median ratio of
answer to target box area (IoU rewards hedging with larger boxes; the toy ablation shows it happening).

Multi-GPU (data parallel) runs go through `accelerate.Accelerator`, like the SFT trainer (a transformers Trainer):
`accelerate launch ... -m focuskit.cli.main train grpo --config ...`. Each process takes its own shard of the
episodes and samples `batch_size` answers per step from it (so `batch_size` is per process, as in SFT), the
gradients are averaged across processes, and the logged diagnostics are averaged over all processes. On one process
the Accelerator adds nothing: the model is not wrapped and each group's loss reaches `backward` unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from focuskit.core.episode import Episode
from focuskit.core.errors import ModelError
from focuskit.models.vlms.encoding import EncodedEpisode, collate_encoded, encode_episode, episode_answer
from focuskit.models.vlms.factory import VLMBundle
from focuskit.models.vlms.families import family_spec
from focuskit.models.vlms.parsing import parse_box
from focuskit.training.grpo_config import GRPOConfig
from focuskit.training.rewards import format_reward, iou_reward, parsed_ok

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float]]
_VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<image>")


# --- the maths, as plain functions (unit-tested) ------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(N,) rewards, consecutive groups of `group_size` -> (N,) advantages (reward - group mean) [/ group std].

    A group whose rewards are all equal gets advantages of exactly 0.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=False) + eps)
    return centred.reshape(-1)


def grpo_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    beta: float,
    loss_type: str,
    normalizer: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO objective for one group of answers.

    Shapes: `logps`, `old_logps`, `ref_logps`, `mask` are (G, T) over answer tokens (`mask` marks real tokens);
    `advantages` is (G,). `normalizer` is what the summed loss is divided by: the number of answers in the whole
    batch (loss_type "grpo": each answer's token mean counts once) or of answer tokens ("bnpo"). Returns the loss
    and detached statistics: KL (mean per token) and the fraction of tokens whose ratio was clipped.
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(logps)
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1  # k3 estimator: unbiased, always >= 0
        if beta > 0:
            per_token = per_token + beta * kl
    tokens = mask.sum(dim=1).clamp(min=1)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(dim=1) / tokens).sum() / normalizer
    else:
        loss = (per_token * mask).sum() / normalizer
    n = float(mask.sum().clamp(min=1))
    is_clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    stats = {
        "kl": float((kl.detach() * mask).sum() / n),
        "clip_ratio": float((is_clipped.to(mask.dtype) * mask).sum() / n),
    }
    return loss, stats


# --- rollouts ------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One episode's prompt and its G sampled answers with their rewards."""

    episode: Episode
    encoded: EncodedEpisode
    solution: str
    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    completion_ids: torch.Tensor
    """(G, T) answer tokens, right-padded; T >= 1."""
    completion_mask: torch.Tensor
    """(G, T) bool: real answer tokens (up to and including the end-of-turn token)."""
    texts: list[str]
    rewards: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    """(G,) weighted total reward."""
    parts: dict[str, list[float]] = field(default_factory=dict)
    """Per reward function name, the G unweighted rewards."""
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    area_ratios: list[float] = field(default_factory=list)
    """For answers that are boxes (target present): answer area / target area. IoU rewards hedging with larger
    boxes when the model is unsure; a ratio drifting well above 1 shows it."""
    image_features: tuple[torch.Tensor, ...] | None = None
    """The prompt's per-image vision-tower outputs, computed once and shared by the G answers and all passes."""


@dataclass
class GRPOStepStats:
    """What one optimizer step logs."""

    step: int
    values: dict[str, float]


class ZeroVarianceMonitor:
    """Counts consecutive steps whose within-group reward std is ~0 (and whose format rate is ~0) and warns once
    per streak, because the loss keeps going down while nothing is learned and nobody notices for hours."""

    def __init__(self, threshold: float, patience: int, min_format_rate: float) -> None:
        self.threshold = threshold
        self.patience = patience
        self.min_format_rate = min_format_rate
        self.zero_std_streak = 0
        self.low_format_streak = 0
        self.warnings: list[str] = []

    def update(self, step: int, reward_std: float, format_rate: float | None) -> list[str]:
        fired: list[str] = []
        self.zero_std_streak = self.zero_std_streak + 1 if reward_std <= self.threshold else 0
        if self.zero_std_streak == self.patience:
            fired.append(
                f"step {step}: the reward std within groups has been ~0 (<= {self.threshold:g}) for "
                f"{self.patience} steps in a row: every answer in a group scores the same, so all advantages are 0 "
                "and GRPO learns nothing. Raise temperature or group_size, check that answers vary, and start from "
                "an SFT checkpoint that already writes boxes (docs/grpo.md, Diagnostics)."
            )
        if format_rate is not None:
            self.low_format_streak = self.low_format_streak + 1 if format_rate < self.min_format_rate else 0
            if self.low_format_streak == self.patience:
                fired.append(
                    f"step {step}: fewer than {self.min_format_rate:.0%} of answers were well-formed boxes for "
                    f"{self.patience} steps in a row: the model does not write the trained box form, so the IoU "
                    "reward is always 0. Start GRPO from an SFT checkpoint (docs/grpo.md, Diagnostics)."
                )
        for msg in fired:
            logger.warning(msg)
        self.warnings += fired
        return fired


class GRPOTrainer:
    """Runs GRPO on a LoRA-wrapped `bundle.model` (a peft model: the reference is the adapter disabled).

    `reward_funcs` default to `[iou_reward, format_reward]` weighted by `config.reward_weights`; custom functions
    follow the same convention (`f(completions, solution, **kwargs) -> list[float]`) and need `reward_weights`.

    `accelerator`: the run's `Accelerator` (one per `accelerate launch` process; `train_grpo` makes it). Without one,
    the trainer makes a single-process Accelerator on `device` that leaves the model where it is, so direct use
    (tests, notebooks) behaves as a plain PyTorch loop.
    """

    def __init__(
        self,
        bundle: VLMBundle,
        config: GRPOConfig,
        episodes: Sequence[Episode],
        *,
        reward_funcs: Sequence[RewardFunc] | None = None,
        reward_weights: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        if not hasattr(bundle.model, "disable_adapter"):
            raise ModelError(
                "GRPO needs a LoRA-wrapped (peft) model: the reference policy is the same model with the adapter "
                "disabled, so no second copy is kept"
            )
        if not episodes:
            raise ModelError("GRPO needs at least one training episode")
        self.bundle = bundle
        self.model = bundle.model
        self.unwrapped = bundle.model
        """The peft model itself (generation, adapter switching, saving); `self.model` may be a DDP/DeepSpeed
        wrapper after `accelerator.prepare`, and gradients must flow through the wrapper to be synchronized."""
        self.processor = bundle.processor
        self.config = config
        if accelerator is None:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model.to(self.device)
            accelerator = Accelerator(
                cpu=self.device.type == "cpu",
                device_placement=False,  # keep the caller's device (e.g. cuda:1), already set above
                mixed_precision="bf16" if config.bf16 and self.device.type == "cuda" else "no",
                gradient_accumulation_steps=config.episodes_per_step,
                step_scheduler_with_optimizer=False,
            )
        else:
            self.device = accelerator.device
        self.accelerator = accelerator
        # Each process trains on its own shard; one process keeps every episode in the original order, so the
        # episodes sampled with the seeded rng are the same as without an Accelerator.
        shard = list(episodes)[accelerator.process_index :: accelerator.num_processes]
        if len(shard) < config.episodes_per_step:
            raise ModelError(
                f"process {accelerator.process_index} of {accelerator.num_processes} got {len(shard)} episode(s) but "
                f"each step needs {config.episodes_per_step} per process (batch_size {config.batch_size} / "
                f"group_size {config.group_size}): use more episodes, fewer processes or a smaller batch_size"
            )
        self.episodes = shard
        if reward_funcs is None:
            self.reward_funcs: list[RewardFunc] = [iou_reward, format_reward]
            self.reward_weights = [config.reward_weights.iou, config.reward_weights.format]
        else:
            self.reward_funcs = list(reward_funcs)
            self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
            if len(self.reward_weights) != len(self.reward_funcs):
                raise ModelError(
                    f"number of reward weights ({len(self.reward_weights)}) must match number of reward functions "
                    f"({len(self.reward_funcs)})"
                )
        tok = self.processor.tokenizer
        spec = family_spec(bundle.family)
        eos = {tok.convert_tokens_to_ids(spec.end_of_turn), tok.pad_token_id, tok.eos_token_id}
        eos.discard(None)
        self.eos_ids = sorted(int(i) for i in eos)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0])
        vocab = tok.get_vocab()
        self.suppress = sorted({vocab[t] for t in _VISION_TOKENS if t in vocab})
        self.rng = np.random.default_rng(config.seed)
        self._vision_model = getattr(self.model.get_base_model(), "model", None)
        vision_trainable = any(p.requires_grad for n, p in self.model.named_parameters() if ".visual." in n)
        self._share_vision = (
            bundle.family in ("qwen2_vl", "qwen2_5_vl")
            and hasattr(self._vision_model, "get_image_features")
            and not vision_trainable
        )
        self.monitor = ZeroVarianceMonitor(
            config.diagnostics.zero_std_threshold,
            config.diagnostics.zero_std_patience,
            config.diagnostics.min_format_rate,
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ModelError("the model has no trainable parameters: were the LoRA adapters loaded as frozen?")
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        from transformers import get_scheduler

        total = config.max_steps * config.num_iterations
        self.scheduler = get_scheduler(
            config.lr_scheduler,
            self.optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * total),
            num_training_steps=total,
        )
        self._fill_deepspeed_config()
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, self.optimizer, self.scheduler)
        self.log_history: list[dict[str, float]] = []
        self._cache: dict[int, tuple[EncodedEpisode, str, tuple[int, int], tuple[int, int]]] = {}

    def _fill_deepspeed_config(self) -> None:
        """Resolve the DeepSpeed JSON's "auto" values from this config before `prepare`.

        The shipped DeepSpeed JSON leaves batch sizes and clipping on "auto" for the transformers Trainer to fill;
        here there is no Trainer and no dataloader, so they are set from the GRPO config: one micro-batch is one
        group of answers, and a step accumulates one micro-batch per episode of the process's batch.
        """
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is None:
            return
        ds = plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = self.config.group_size
        ds["gradient_accumulation_steps"] = self.config.episodes_per_step
        ds["train_batch_size"] = self.config.batch_size * self.accelerator.num_processes
        ds["gradient_clipping"] = self.config.max_grad_norm
        zero = ds.get("zero_optimization", {})
        if zero.get("reduce_bucket_size") == "auto":
            text = getattr(self.unwrapped.config, "text_config", self.unwrapped.config)
            hidden = getattr(text, "hidden_size", None)
            zero["reduce_bucket_size"] = hidden * hidden if hidden else int(5e8)

    # --- data -------------------------------------------------------------------------------------------------------
    def _encoded(self, episode: Episode) -> tuple[EncodedEpisode, str, tuple[int, int], tuple[int, int]]:
        """Prompt inputs and the target answer of an episode (kept for reuse with `config.cache_encoded`)."""
        key = id(episode)  # the trainer's episode list keeps every episode alive, so identities are stable
        if key in self._cache:
            return self._cache[key]
        enc = encode_episode(
            self.processor, episode, with_answer=False, prompt=self.bundle.prompt, family=self.bundle.family
        )
        answer, size, rsize = episode_answer(episode, self.bundle.family, self.bundle.prompt, self.processor)
        if self.config.cache_encoded:
            self._cache[key] = (enc, answer, size, rsize)
        return enc, answer, size, rsize

    def _sample_episodes(self) -> list[Episode]:
        idx = self.rng.choice(len(self.episodes), size=self.config.episodes_per_step, replace=False)
        return [self.episodes[int(i)] for i in idx]

    # --- rollout ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, episodes: Sequence[Episode]) -> list[Group]:
        """Sample G answers per episode with one batched `generate`, and reward them."""
        cfg = self.config
        G = cfg.group_size
        encoded = [self._encoded(ep) for ep in episodes]
        batch = collate_encoded([e[0] for e in encoded], padding_side="left", pad_token_id=self.pad_id)
        inputs = {k: v.to(self.device) for k, v in batch.items() if k not in ("box_token_mask", "query_image_mask")}
        prompt_len = inputs["input_ids"].shape[1]
        self.model.eval()
        out = self.unwrapped.generate(
            **inputs,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=G,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            suppress_tokens=self.suppress or None,
        )
        completions = out[:, prompt_len:].cpu()
        if completions.shape[1] == 0:  # nothing generated at all: keep one pad token so shapes stay valid
            completions = torch.full((out.shape[0], 1), self.pad_id, dtype=out.dtype)
        groups = []
        tok = self.processor.tokenizer
        eos = torch.tensor(self.eos_ids)
        for i, (ep, (enc, answer, size, rsize)) in enumerate(zip(episodes, encoded, strict=True)):
            ids = completions[i * G : (i + 1) * G]
            is_eos = torch.isin(ids, eos)
            # Real tokens: everything up to and including the first end-of-turn/pad token.
            before_eos = (is_eos.cumsum(dim=1) - is_eos.long()) == 0
            mask = before_eos
            texts = [
                tok.decode(row[m & ~e].tolist(), skip_special_tokens=False)
                for row, m, e in zip(ids, mask, is_eos, strict=True)
            ]
            length = max(1, int(mask.sum(dim=1).max()))
            groups.append(
                Group(
                    episode=ep,
                    encoded=enc,
                    solution=answer,
                    image_size=size,
                    resized_size=rsize,
                    completion_ids=ids[:, :length].clone(),
                    completion_mask=mask[:, :length].clone(),
                    texts=texts,
                )
            )
        self._reward(groups)
        return groups

    def _reward(self, groups: list[Group]) -> None:
        for g in groups:
            n = len(g.texts)
            total = torch.zeros(n, dtype=torch.float32)
            for func, weight in zip(self.reward_funcs, self.reward_weights, strict=True):
                values = func(
                    g.texts,
                    [g.solution] * n,
                    family=self.bundle.family,
                    image_size=[g.image_size] * n,
                    resized_size=[g.resized_size] * n,
                    allow_absent=self.bundle.prompt.allow_absent,
                )
                g.parts[getattr(func, "__name__", "reward")] = [float(v) for v in values]
                total += weight * torch.tensor(values, dtype=torch.float32)
            g.rewards = total
            g.area_ratios = self._area_ratios(g)

    def _area_ratios(self, g: Group) -> list[float]:
        truth = parse_box(g.solution, self.bundle.family, g.image_size, g.resized_size).box
        if truth is None or truth.area <= 0:
            return []
        ratios = []
        for text in g.texts:
            box = parse_box(text, self.bundle.family, g.image_size, g.resized_size).box
            if box is not None:
                ratios.append(box.area / truth.area)
        return ratios

    # --- log-probs --------------------------------------------------------------------------------------------------
    def group_logps(self, group: Group) -> torch.Tensor:
        """(G, T) log-probs of the group's answer tokens under the current model (temperature-scaled, as sampled)."""
        G, T = group.completion_ids.shape
        enc = group.encoded.inputs
        prompt_ids = enc["input_ids"].to(self.device)
        ids = torch.cat([prompt_ids.expand(G, -1), group.completion_ids.to(self.device)], dim=1)
        attn = torch.cat(
            [enc["attention_mask"].to(self.device).expand(G, -1), group.completion_mask.to(self.device).long()], dim=1
        )
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn}
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in enc:
                tt = enc[key].to(self.device)
                inputs[key] = torch.cat([tt.expand(G, -1), tt.new_zeros(G, T)], dim=1)
        features = self._image_features(group)
        for key, value in enc.items():
            if key in inputs or key in ("input_ids", "attention_mask") or (features and key == "pixel_values"):
                continue
            inputs[key] = torch.cat([value.to(self.device)] * G, dim=0)
        if features:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features * G)}
        logits = self.model(**inputs, logits_to_keep=T + 1, use_cache=False).logits[:, :-1, :]
        logits = logits.float() / self.config.temperature
        targets = group.completion_ids.to(self.device)
        return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def _image_features(self, group: Group) -> tuple[torch.Tensor, ...] | None:
        """Vision-tower outputs for the group's images (Qwen families), or None to let the model compute them.

        LoRA adapts only the language model, so the vision tower is frozen: its output is the same for the policy,
        the reference and every answer of the group, and computing it once saves G x passes of the tower.
        """
        if not self._share_vision or "pixel_values" not in group.encoded.inputs:
            return None
        if group.image_features is None:
            enc = group.encoded.inputs
            out = self._vision_model.get_image_features(
                enc["pixel_values"].to(self.device), enc["image_grid_thw"].to(self.device), return_dict=True
            )
            group.image_features = tuple(out.pooler_output)
        return group.image_features

    @torch.no_grad()
    def reference_logps(self, group: Group) -> torch.Tensor:
        """Log-probs under the reference: the same weights with the LoRA adapter switched off (on the unwrapped
        peft model, which the DDP/DeepSpeed wrapper forwards to), so no second model is kept in memory."""
        with self.unwrapped.disable_adapter():
            return self.group_logps(group)

    # --- one step ---------------------------------------------------------------------------------------------------
    def step(self, step: int) -> GRPOStepStats:
        cfg = self.config
        groups = self.rollout(self._sample_episodes())
        advantages = [group_advantages(g.rewards, cfg.group_size, scale=cfg.scale_rewards) for g in groups]
        if cfg.loss_type == "grpo":
            normalizer = float(sum(g.completion_ids.shape[0] for g in groups))
        else:
            normalizer = float(sum(int(g.completion_mask.sum()) for g in groups)) or 1.0
        need_ref = cfg.beta > 0
        for g in groups:
            g.ref_logps = self.reference_logps(g) if need_ref else None
        if cfg.num_iterations > 1:
            with torch.no_grad():
                for g in groups:
                    g.old_logps = self.group_logps(g)
        eps_high = cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon
        stats: dict[str, list[float]] = {"kl": [], "clip_ratio": [], "loss": [], "grad_norm": []}
        self.model.train()
        acc = self.accelerator
        # One micro-batch per group: the Accelerator accumulates over the step's groups (episodes_per_step), so
        # DDP synchronizes gradients once, at the last group, and DeepSpeed steps once per optimizer step.
        accum = acc.gradient_accumulation_steps
        for _ in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            total_loss = 0.0
            for g, adv in zip(groups, advantages, strict=True):
                with acc.accumulate(self.model):
                    logps = self.group_logps(g)
                    old = g.old_logps if g.old_logps is not None else logps.detach()
                    loss, s = grpo_token_loss(
                        logps,
                        old,
                        g.ref_logps,
                        adv.to(self.device),
                        g.completion_mask.to(self.device),
                        epsilon_low=cfg.epsilon,
                        epsilon_high=eps_high,
                        beta=cfg.beta,
                        loss_type=cfg.loss_type,
                        normalizer=normalizer,
                    )
                    # The loss is already normalized over the whole step; accelerate (and DeepSpeed) divide by the
                    # accumulation steps, so multiply back to keep the gradient of the plain loop.
                    acc.backward(loss * accum if accum > 1 else loss)
                total_loss += float(loss.detach())
                stats["kl"].append(s["kl"])
                stats["clip_ratio"].append(s["clip_ratio"])
            params = [p for p in self.model.parameters() if p.requires_grad]
            grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)  # DeepSpeed clips itself, returns its norm
            self.optimizer.step()
            self.scheduler.step()
            stats["loss"].append(total_loss)
            stats["grad_norm"].append(float(grad_norm) if grad_norm is not None else float("nan"))
        self.model.eval()
        return GRPOStepStats(step=step, values=self._diagnostics(step, groups, stats))

    def _diagnostics(self, step: int, groups: list[Group], stats: dict[str, list[float]]) -> dict[str, float]:
        """The step's diagnostics over all processes: rewards are gathered (every process has the same number of
        groups), the other values are per-process means averaged across processes (box_area_ratio: the mean of the
        per-process medians). The zero-variance monitor runs on the main process only, which alone logs."""
        rewards = torch.stack([g.rewards for g in groups])  # (episodes, G)
        multi = self.accelerator.num_processes > 1
        if multi:
            rewards = self.accelerator.gather(rewards.to(self.device)).float().cpu()
        within_std = float(rewards.std(dim=1, unbiased=False).mean())
        zero_std = float(
            (rewards.std(dim=1, unbiased=False) <= self.config.diagnostics.zero_std_threshold).float().mean()
        )
        values: dict[str, float] = {
            "step": float(step),
            "reward": float(rewards.mean()),
            "reward_std_within": within_std,
            "frac_zero_std_groups": zero_std,
            "completion_length": float(np.mean([float(g.completion_mask.sum(dim=1).float().mean()) for g in groups])),
            "parse_rate": float(
                np.mean([np.mean(parsed_ok(g.texts, family=self.bundle.family)) for g in groups])  # type: ignore[arg-type]
            ),
            "kl": float(np.mean(stats["kl"])) if self.config.beta > 0 else float("nan"),
            "clip_ratio": float(np.mean(stats["clip_ratio"])),
            "loss": float(np.mean(stats["loss"])),
            "grad_norm": float(np.mean(stats["grad_norm"])),
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
        }
        for name in {n for g in groups for n in g.parts}:
            values[f"rewards/{name}"] = float(np.mean([np.mean(g.parts[name]) for g in groups if name in g.parts]))
        ratios = [r for g in groups for r in g.area_ratios]
        values["box_area_ratio"] = float(np.median(ratios)) if ratios else float("nan")
        if multi:
            exact = ("step", "reward", "reward_std_within", "frac_zero_std_groups")
            values = self._average_across_processes(values, exact=exact)
        format_rate = values.get("rewards/format_reward")
        if "rewards/iou_reward" in values:
            values["iou"] = values["rewards/iou_reward"]
        if format_rate is not None:
            values["format_rate"] = format_rate
        if self.accelerator.is_main_process:
            self.monitor.update(step, within_std, format_rate)
        return values

    def _average_across_processes(self, values: dict[str, float], *, exact: Sequence[str]) -> dict[str, float]:
        """Mean of each value over processes (NaN-aware: a process without boxes has no area ratio); keys in
        `exact` were computed from gathered tensors already and are kept. Keys are sorted so every process sends
        its values in the same order."""
        keys = sorted(k for k in values if k not in exact)
        local = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        present = (~torch.isnan(local)).to(torch.float64)
        both = self.accelerator.reduce(torch.stack([torch.nan_to_num(local), present]), reduction="sum")
        sums, counts = both[0].cpu(), both[1].cpu()
        out = {k: values[k] for k in exact if k in values}
        for i, k in enumerate(keys):
            out[k] = float(sums[i] / counts[i]) if counts[i] > 0 else float("nan")
        return out

    # --- loop -------------------------------------------------------------------------------------------------------
    def train(
        self,
        on_log: Callable[[dict[str, float]], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run `config.max_steps` steps; every `logging_steps` the step's diagnostics go to the log history,
        the progress bar, the module logger and `on_log`. `on_step(step)` runs after every step (checkpoints)."""
        cfg = self.config
        main = self.accelerator.is_main_process
        bar = tqdm(range(1, cfg.max_steps + 1), desc="grpo", unit="step", disable=not (cfg.progress_bar and main))
        for step in bar:
            stats = self.step(step)
            if on_step is not None:
                on_step(step)
            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                self.log_history.append(stats.values)
                v = stats.values
                bar.set_postfix(
                    reward=f"{v['reward']:.3f}", std=f"{v['reward_std_within']:.3f}", iou=f"{v.get('iou', 0):.3f}"
                )
                if main:  # one line per step, not one per process
                    logger.info("grpo %s", {k: round(x, 4) for k, x in v.items()})
                    if on_log is not None:
                        on_log(v)
        return self.log_history


def check_reference(trainer: GRPOTrainer, episode: Episode, *, atol: float = 1e-4) -> float:
    """Check that the reference (adapter disabled) equals the start policy (adapter on) before training.

    Freshly initialised LoRA adapters are zero, so the two must agree; a difference means the adapters are not
    fresh (e.g. a trained adapter was loaded as trainable), and the KL term would anchor to the wrong model.
    Returns the max absolute log-prob difference on `episode`'s target answer tokens; raises `ModelError` above `atol`.
    """
    enc, answer, size, rsize = trainer._encoded(episode)
    tok = trainer.processor.tokenizer
    ids = torch.tensor([tok(answer, add_special_tokens=False)["input_ids"]])
    group = Group(episode, enc, answer, size, rsize, ids, torch.ones_like(ids, dtype=torch.bool), [answer])
    with torch.no_grad():
        policy = trainer.group_logps(group)
        reference = trainer.reference_logps(group)
    diff = float((policy - reference).abs().max())
    if diff > atol:
        raise ModelError(
            f"the reference policy (model with its LoRA adapter disabled) does not match the start checkpoint: "
            f"log-probs differ by up to {diff:.3g} before any training step. GRPO's KL would anchor to a different "
            "model; start from a full checkpoint or a merged SFT model with fresh adapters"
        )
    return diff
