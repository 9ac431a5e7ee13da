"""Equivalence before deletion: TRL's GRPO loss and gradients (FocusGRPOTrainer) match the hand-written loop's.

The hand-written trainer (focuskit up to commit e520691, `training/grpo_trainer.py`) is gone; its objective is
frozen below as plain functions (the maths only, copied line for line: `group_advantages`, `grpo_token_loss` and the
per-group log-prob pass). On the tiny model and one fixed batch of sampled completions, both objectives are evaluated
on the identical completions (TRL's batch) and must give the same loss, advantages and LoRA gradients. The policy's
adapters are perturbed first so the policy differs from the reference (the KL term is non-zero), and "old" log-probs
are shifted for the clipped cases so the ratio leaves [1 - eps, 1 + eps_high].

Two TRL defaults differ from the old loop; both are kept (no override):

1. `use_bias_correction_kl=True` (TRL's default since DeepSeek-V3.2) multiplies the per-token KL by the policy
   ratio, whose value is 1 on-policy but whose gradient is not: the KL gradient becomes the unbiased reverse-KL
   gradient. The old loop had no such factor; `use_bias_correction_kl=False` reproduces it exactly (cases below), and
   the `kl_ratio` flag of the frozen loss reproduces TRL's default (case `grpo-kl-trl-default`).
2. With `scale_rewards="group"` TRL divides advantages by the
*sample* std of the group (`trl.trainer.utils.nanstd` applies Bessel's correction), the old loop by the population
std, so TRL's advantages are sqrt((G - 1) / G) times the old ones (0.866 at G = 4): the same direction, a
learning-rate-like scale. Minimal reproduction: rewards [1, 0, 1, 1] give TRL advantages [0.5, -1.5, 0.5, 0.5]
and the old loop [0.577, -1.732, 0.577, 0.577]. `test_advantage_scale_is_a_named_difference` pins it; the loss
and gradient comparison uses the sample std on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from focuskit.data.episodes_jsonl import load_episodes
from focuskit.data.synth import SynthConfig, write_synth_dataset
from focuskit.models.vlms import TinyVLMConfig, build_tiny_vlm, load_vlm
from focuskit.models.vlms.factory import lora_config
from focuskit.training.grpo_config import FocusGRPOConfig
from focuskit.training.grpo_data import GRPOEpisodes
from focuskit.training.grpo_trainer import FocusGRPOTrainer

G = 4


# --- frozen reference: the hand-written loop's objective ----------------------------------------------------------
def old_group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4, unbiased: bool = False
):
    """The old loop divided by the population std (`unbiased=False`); TRL divides by the sample std (see below)."""
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=unbiased) + eps)
    return centred.reshape(-1)


def old_grpo_token_loss(logps, old_logps, ref_logps, advantages, mask, *, epsilon_low, epsilon_high, beta,
                        loss_type, normalizer, kl_ratio: bool = False):  # fmt: skip
    """The old loop's loss; `kl_ratio=True` multiplies the KL by the ratio (TRL's default, see the module doc)."""
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv)
    if ref_logps is not None and beta > 0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * (kl * ratio if kl_ratio else kl)
    if loss_type == "grpo":
        return ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / normalizer
    return (per_token * mask).sum() / normalizer


def old_group_logps(model: Any, enc: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, temperature):
    """(G, T) log-probs of one episode's G answers: the prompt (batch 1) expanded, answers appended."""
    n, t = ids.shape
    inputs: dict[str, Any] = {
        "input_ids": torch.cat([enc["input_ids"].expand(n, -1), ids], dim=1),
        "attention_mask": torch.cat([enc["attention_mask"].expand(n, -1), mask.long()], dim=1),
    }
    tt = enc["mm_token_type_ids"]
    inputs["mm_token_type_ids"] = torch.cat([tt.expand(n, -1), tt.new_zeros(n, t)], dim=1)
    inputs["pixel_values"] = torch.cat([enc["pixel_values"]] * n, dim=0)
    inputs["image_grid_thw"] = torch.cat([enc["image_grid_thw"]] * n, dim=0)
    logits = model(**inputs, logits_to_keep=t + 1, use_cache=False).logits[:, :-1, :].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


# --- fixtures -----------------------------------------------------------------------------------------------------
class RecordingReward:
    """Rewards that vary between samples of a random model (parity of the answer's length) and are remembered."""

    __name__ = "parity_reward"

    def __init__(self) -> None:
        self.last: list[float] = []

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        self.last = [float(len(c[-1]["content"]) % 2) for c in completions]
        return self.last


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("equiv")
    build_tiny_vlm(TinyVLMConfig(min_pixels=56 * 56, max_pixels=56 * 56)).save(root / "model")
    synth = SynthConfig(episodes=4, shots=2, image_size=56, absent_rate=0.0, seed=11, objects=2)
    return root / "model", write_synth_dataset(synth, root / "synth", progress=False), root


def _trainer(setup: tuple[Path, Path, Path], reward: RecordingReward, **overrides: Any) -> FocusGRPOTrainer:
    model_dir, episodes_file, root = setup
    settings = {"per_device_train_batch_size": 2 * G, "num_generations": G, "max_completion_length": 6,
                "temperature": 0.9, "report_to": "none", "disable_tqdm": True, "reward_weights": None,
                **overrides}  # fmt: skip
    args = FocusGRPOConfig(model=str(model_dir), data=[str(episodes_file)], output_dir=str(root / "out"), **settings)
    bundle = load_vlm(model_dir, dtype="float32")
    data = GRPOEpisodes(load_episodes(episodes_file), bundle.processor, bundle.family, bundle.prompt, cache=True)
    trainer = FocusGRPOTrainer(bundle.model, data=data, args=args, reward_funcs=[reward],
                               peft_config=lora_config(args.lora))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained adapters: the policy is no longer the reference, so the KL term is non-zero
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


OLD_KL = {"use_bias_correction_kl": False}
CASES = [
    pytest.param({"loss_type": "grpo", "beta": 0.04, **OLD_KL}, False, id="grpo-kl"),
    pytest.param({"loss_type": "grpo", "beta": 0.0, "scale_rewards": "none"}, False, id="grpo-nokl-unscaled"),
    pytest.param({"loss_type": "grpo", "beta": 0.04, "epsilon_high": 0.28, **OLD_KL}, True, id="grpo-clipped-kl"),
    pytest.param({"loss_type": "bnpo", "beta": 0.04, "epsilon_high": 0.28, **OLD_KL}, True, id="bnpo-clipped-kl"),
    pytest.param({"loss_type": "grpo", "beta": 0.04}, True, id="grpo-kl-trl-default"),
]


@pytest.mark.parametrize(("settings", "shift_old"), CASES)
def test_trl_loss_and_gradients_match_the_hand_written_objective(
    setup: tuple[Path, Path, Path], settings: dict[str, Any], shift_old: bool
) -> None:
    reward = RecordingReward()
    trainer = _trainer(setup, reward, **settings)
    args = trainer.args
    torch.manual_seed(3)
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in (0,) * G + (1,) * G]
    batch = trainer._generate_and_score_completions(rows)
    rewards = torch.tensor(reward.last)
    assert rewards.view(-1, G).std(dim=1).max() > 0, "the fixed batch must have a learning signal"
    ids, mask = batch["completion_ids"], batch["completion_mask"].bool()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    model = trainer.model

    # The old loop: one pass per episode group, log-probs of the current policy, reference with adapters off.
    old_logps_all = None
    if shift_old:
        with torch.no_grad():
            current = torch.cat([
                old_group_logps(model, trainer.focus_data.encoded(i).inputs, ids[i * G : (i + 1) * G],
                                mask[i * G : (i + 1) * G], args.temperature)
                for i in range(2)
            ])  # fmt: skip
        old_logps_all = current + 0.4 * torch.randn(current.shape, generator=torch.Generator().manual_seed(1))
        batch["old_per_token_logps"] = old_logps_all * batch["completion_mask"]
    scale = args.scale_rewards != "none"
    advantages = old_group_advantages(rewards, G, scale=scale, unbiased=True)
    normalizer = float(len(ids)) if args.loss_type == "grpo" else float(mask.sum())
    old_total = 0.0
    for g in range(2):
        sl = slice(g * G, (g + 1) * G)
        enc = trainer.focus_data.encoded(g).inputs
        logps = old_group_logps(model, enc, ids[sl], mask[sl], args.temperature)
        with torch.no_grad(), model.disable_adapter():
            ref = old_group_logps(model, enc, ids[sl], mask[sl], args.temperature)
        old = old_logps_all[sl] if old_logps_all is not None else logps.detach()
        loss = old_grpo_token_loss(logps, old, ref, advantages[sl], mask[sl], epsilon_low=args.epsilon,
                                   epsilon_high=args.epsilon_high or args.epsilon, beta=args.beta,
                                   loss_type=args.loss_type, normalizer=normalizer,
                                   kl_ratio=args.use_bias_correction_kl)  # fmt: skip
        loss.backward()
        old_total += float(loss.detach())
    old_grads = [p.grad.detach().clone() for p in params]
    trainer.model.zero_grad(set_to_none=True)

    new_loss = trainer.compute_loss(trainer.model, batch)
    new_loss.backward()
    new_grads = [p.grad.detach().clone() for p in params]

    assert torch.allclose(batch["advantages"], advantages, atol=1e-5)
    assert new_loss.item() == pytest.approx(old_total, rel=1e-4, abs=1e-6)
    flat_old, flat_new = torch.cat([g.flatten() for g in old_grads]), torch.cat([g.flatten() for g in new_grads])
    assert flat_old.abs().max() > 0
    rel = float((flat_new - flat_old).norm() / flat_old.norm())
    assert rel < 1e-4, f"gradients differ: relative L2 error {rel:.2e}"


def test_advantage_scale_is_a_named_difference() -> None:
    """TRL's group normalisation (sample std) vs the old loop's (population std): a factor sqrt((G - 1) / G)."""
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.2, 0.9, 0.4, 0.4])
    grouped = rewards.view(-1, G)
    trl_adv = ((grouped - grouped.mean(dim=1, keepdim=True)) / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)).flatten()
    assert torch.allclose(trl_adv, old_group_advantages(rewards, G, unbiased=True), atol=1e-6)
    old = old_group_advantages(rewards, G)
    assert torch.allclose(trl_adv, old * ((G - 1) / G) ** 0.5, rtol=2e-3, atol=2e-3)
    assert torch.allclose(trl_adv[:4], torch.tensor([0.5, -1.5, 0.5, 0.5]), atol=1e-3)
