"""Sizes of a toy run: `QUICK` (<= 10 min on 2 cores), `FULL` (<= 60 min on 2 cores), `GPU` (one large GPU, < 8 min).

Every preset renders frame pools (see `pool.py`), pretrains one base per run ("locate", then the `match` stages: the
stand-in for what a pretrained Qwen2-VL brings), then runs the rows from it. The CPU presets' base is the recipe
that learned the match (runs P11 -> P14 of docs/toy_ablation.md): about 2 hours on one core, so it is
built once (`toy_ablation.py --pretrain-only --save DIR`) and reused (`--base DIR`), as the paper starts from a
pretrained Qwen2-VL rather than pretraining it for each ablation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The paper's Appendix C grid (Table 6, TAO 4-shot): weight beta in {0.25, 0.5, 1.0} x margin mu in
# {0.025, 0.05, 0.075}; its choice is beta 0.25, mu 0.025 (training.AttentionLossConfig's defaults). Issue 13 quoted the
# two swapped (lambda 0.025-0.075, margin 0.01-1.0); Table 6's beta=0 column, equal for every mu, shows which is which.
PAPER_GRID: tuple[tuple[float, float], ...] = tuple((w, m) for w in (0.25, 0.5, 1.0) for m in (0.025, 0.05, 0.075))


@dataclass(frozen=True)
class MatchStage:
    """One pointer-supervised stage of the base (see `grounding.py`): the retrieval heads a pretrained VLM brings."""

    steps: int
    clean_rate: float
    """Fraction of episodes whose supports show the target alone (1.0: all; their box is the whole object)."""
    shots: tuple[int, int] = (1, 4)
    pointer: dict[str, Any] = field(default_factory=dict)
    """`grounding.PointerConfig` fields (search / bind / gather layers)."""
    batch_size: int = 32
    """32: at 8 or 16 neither the toy VLM nor the read-out probe ever left chance (docs/toy_ablation.md, 4b)."""
    lr: float = 1e-3
    schedule: str = "constant_with_warmup"
    episode_seed: int | None = None
    """Seed of this stage's episode draw (None: 4 + the stage's index)."""


@dataclass(frozen=True)
class Preset:
    name: str
    model: dict[str, Any]
    """`CNNVLMConfig` fields (language-model sizes, tower options, pixel limits)."""
    pre_instances: int
    pre_steps: int
    train_instances: int
    sft_steps: int
    eval_episodes: int
    grpo_steps: int
    seeds: tuple[int, ...] = (0,)
    rows: tuple[str, ...] = ("sft",)
    grid: tuple[tuple[float, float], ...] = ()
    """(weight, margin) pairs for the attention-loss grid (first k layers), run for the first seed only."""
    frames: int = 6
    """Poses rendered per instance; episodes are ordered subsets of them."""
    objects: int = 2
    image_size: int = 112
    backgrounds: tuple[str, ...] = ("gradient",)
    min_scale: float = 0.25
    max_scale: float = 0.45
    pre_lr: float = 2e-3
    sft_lr: float = 1e-3
    grpo_lr: float = 1e-3
    batch_size: int = 8
    """Batch of the SFT rows."""
    pre_batch_size: int = 8
    """Batch of the locate stage."""
    copy_rate: float = 0.0
    groups: tuple[str, ...] | None = None
    """Appearance attributes a look-alike may differ in (`pool.mutate_within`; None: all five of `focuskit.data.synth`).
    `pool.VISIBLE_GROUPS` keeps the changes a 4x4 token grid can see (the oracle check in docs/toy_ablation.md)."""
    clean_rate: float = 0.0
    """Fraction of training episodes whose supports show the target alone (`alone` frames per object are rendered)."""
    alone: int = 0
    swap_roles: bool = True
    """Training episodes pick their target among the instance's objects at random (see `pool.sample_episodes`)."""
    shots: tuple[int, ...] = (1, 2, 4)
    attention: dict[str, Any] = field(default_factory=dict)
    """Attention-loss fields shared by every attention row (the defaults of `AttentionLossConfig` otherwise)."""
    match: tuple[MatchStage, ...] = ()
    """The base's stages after locate, each on its own draw of training episodes (empty: the base is locate-only)."""
    mutations: tuple[int, int] | None = None
    """Attributes a look-alike changes (`SynthConfig.mutations`; None: its default 1-2, the hard look-alikes)."""
    alone_scale: tuple[float, float] | None = None
    """Side fraction of the solo (alone-support) objects (`pool.render_pool`; None: the scene's own sizes)."""
    sft_schedule: str | None = None
    """Learning-rate schedule of the SFT rows (None: `SFTConfig`'s default)."""
    curve_points: int = 0
    """Checkpoints of the first seed's SFT row evaluated for the learning curve (0: none)."""
    explain_episodes: int = 0
    bf16: bool = False
    workers: int = 2
    threads: int = 1


SMALL = {
    "num_layers": 6, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "num_kv_heads": 2,
    "min_pixels": 112 * 112, "max_pixels": 112 * 112, "cnn_scale": 2.0, "position_embedding": True,
}  # fmt: skip
"""cnn_scale 2: the oracle check's pooled 4x4 tokens tell look-alikes apart in 86.5% of episodes at x2, 82.5% at x1."""

# Look-alikes that differ in what a 4x4 token grid can see, and clean-support episodes (run E of docs/toy_ablation.md)
DATA: dict[str, Any] = {"groups": ("color", "pattern", "pattern_color"), "alone": 3, "clean_rate": 0.75}

LEARNED_MATCH: tuple[MatchStage, ...] = (
    MatchStage(steps=3000, clean_rate=1.0, shots=(1, 1), episode_seed=10),
    MatchStage(steps=1500, clean_rate=0.75, shots=(1, 4), pointer={"search_layer": 3, "gather_layer": 2},
               episode_seed=3010),
)  # fmt: skip
"""P11 (one support showing the target alone, k = 1: 72.3% pick at step 3000) then P14 (75% alone supports at
k = 1-4 with the gather hop: 84.8% with boxed supports at k = 4 after 1500 steps), on easy look-alikes (`EASY`).
The episode seeds are those runs' own (`experiment.py` draws stage i of a run started at step s with 10 + i + s),
so `--pretrain-only` trains on the very episodes they did."""

EASY: dict[str, Any] = {"groups": DATA["groups"], "alone": 3, "mutations": (3, 3), "alone_scale": (0.6, 0.7),
                        "match": LEARNED_MATCH}  # fmt: skip
"""The data the match was learned on: look-alikes differ in all three visible attributes; solo objects fill the
frame."""

ROWS: dict[str, Any] = {"clean_rate": 0.0, "batch_size": 32, "sft_steps": 150, "sft_lr": 5e-4,
                        "sft_schedule": "constant_with_warmup"}  # fmt: skip
"""The rows fine-tune the base on the evaluated task (boxed supports, k = 1-4) at the match stages' batch and half
their learning rate: 150 x 32 episodes, the compute of the batch-8 rows' 600 steps. Chosen before any row was run."""

QUICK = Preset(
    name="quick", model=SMALL, pre_instances=300, pre_steps=600, train_instances=400, eval_episodes=150,
    grpo_steps=0, rows=("sft",), shots=(4,), curve_points=2, **EASY, **ROWS,
)  # fmt: skip
"""Base vs SFT at k = 4 on FULL's data (the base is FULL's: pass `--base`, or it is trained first, for hours)."""

FULL = Preset(
    name="full", model=SMALL, pre_instances=300, pre_steps=600, train_instances=1200,
    eval_episodes=200, grpo_steps=30, seeds=(0, 1, 2), **EASY, **ROWS,
    rows=("sft", "sft_attn_first5", "sft_attn_last5", "sft_attn_all", "grpo", "sft_grpo", "sft_attn_first5_grpo"),
    grid=PAPER_GRID,
    curve_points=3, explain_episodes=20,
)  # fmt: skip
"""21 SFT jobs (4 rows x 3 seeds + the 9-cell grid) and 9 GRPO jobs from one base on 2 cores."""

GPU = Preset(
    name="gpu", model=SMALL, pre_instances=300, pre_steps=600, train_instances=1200, eval_episodes=500,
    grpo_steps=30, seeds=(0, 1, 2), **EASY, **ROWS,
    rows=("sft", "sft_attn_first5", "sft_attn_last5", "sft_attn_all", "grpo", "sft_grpo", "sft_attn_first5_grpo"),
    grid=PAPER_GRID,
    curve_points=6, explain_episodes=50, bf16=True, workers=1, threads=8,
)  # fmt: skip
"""FULL's model, data and base recipe in bf16 on one GPU, with 2.5x the held-out episodes (it accepts FULL's `--base`).
Never run by CI or in this repository's CPU sessions (no GPU was lent): its run time is not measured."""

PRESETS = {p.name: p for p in (QUICK, FULL, GPU)}

SMOKE = Preset(
    name="smoke", model={**SMALL, "num_layers": 3}, pre_instances=6, pre_steps=3, train_instances=8, sft_steps=4,
    eval_episodes=8, grpo_steps=2, seeds=(0, 1), rows=("sft", "sft_attn_first5", "sft_grpo"), grid=((0.05, 0.25),),
    curve_points=2, batch_size=2, groups=DATA["groups"], alone=1, clean_rate=0.5, explain_episodes=2,
    mutations=(3, 3), alone_scale=(0.6, 0.7), match=(
        MatchStage(steps=2, clean_rate=1.0, shots=(1, 1), batch_size=2, pointer={"search_layer": 1, "bind_layer": 0}),
        MatchStage(steps=2, clean_rate=0.5, batch_size=2, pointer={"bind_layer": 0, "gather_layer": 1,
                                                                    "search_layer": 2}),
    ),
)  # fmt: skip
"""Seconds-scale run of every code path (tests and `--smoke`); its numbers mean nothing."""

PRESETS["smoke"] = SMOKE
