"""Read-out probe: where a small Qwen2 fails at in-context instance matching, with the toy's own CNN tokens.

The toy VLM (docs/toy_ablation.md) never picks the target over its look-alike. This probe removes everything but
the core step. A 6 x 64 Qwen2 language model (transformers' `Qwen2Model`, fed `inputs_embeds`) sees the 4x4
MobileNetV2 tokens of one support frame showing the target alone, then the 16 tokens of a query frame that holds the
target and a same-shape look-alike, then one answer token. It must name the query cell holding the target's centre.
There is no box text, chat template or image processor. Three ways to read the answer out:

* `cls`: a linear head on the answer token's last hidden state, which is how box text is read out of a VLM;
* `pointer`: the answer state (through a linear map) dotted with each query token's last state (a pointer network);
* `cls+aux`: `cls`, plus attention supervision. Head 0 of layer `--aux-layer`, from the answer token, is trained
  to put its mass on the target's query cells (`-log mass`) for the first `--aux-until` steps, then left alone.

Each variant prints held-out pick rate (the predicted cell's centre nearer the target's than the look-alike's) on
position-balanced episodes (every held-out instance with each object as the target), and writes
`benchmarks/results/toy_readout_probe.json`.

    python -m benchmarks.toy.readout_probe --steps 4000        # about 4 min per variant on one core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).parents[1] / "results" / "toy_readout_probe.json"
GRID, SIZE = 4, 112
CELL_CENTRES = (torch.stack(torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij"), -1)
                .flatten(0, 1).flip(-1).float() * (SIZE / GRID) + SIZE / GRID / 2)  # fmt: skip
"""(16, 2) x, y of each cell's centre, row-major."""


def load_pool(workdir: Path, seed: int, instances: int, mutations: tuple[int, int] = (3, 3)) -> dict[str, torch.Tensor]:
    """Rendered instances (visible-group look-alikes, `mutations` attribute changes) as CNN tokens: frames and solo
    frames. (3, 3) are the easy look-alikes of the probe's runs; the toy VLM's data uses synth's default (1, 2)."""
    from benchmarks.toy.oracle import FeatureMaps
    from benchmarks.toy.pool import VISIBLE_GROUPS, render_pool
    from focuskit.data.synth import SynthConfig

    config = SynthConfig(objects=2, seed=seed, image_size=SIZE, backgrounds=("gradient",), min_scale=0.25,
                         max_scale=0.45, mutations=mutations)  # fmt: skip
    name = f"pool{seed}" if mutations == (3, 3) else f"pool{seed}_m{mutations[0]}{mutations[1]}"
    pool = render_pool(config, workdir / name, instances, 6, alone=3, groups=VISIBLE_GROUPS)
    maps = FeatureMaps(2.0, GRID)

    def tokens(frames: Any) -> np.ndarray:
        return np.stack([maps(f.path) for f in frames])

    return {
        "frames": torch.tensor(np.stack([tokens(p.frames) for p in pool])),
        "boxes": torch.tensor([[[b.as_list() for b in f.boxes] for f in p.frames] for p in pool]),
        "alone": torch.tensor(np.stack([np.stack([tokens(a) for a in p.alone]) for p in pool])),
    }


def centre(box: torch.Tensor) -> torch.Tensor:
    return torch.stack([(box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2], -1)


def covered(box: torch.Tensor) -> torch.Tensor:
    """(n, 16) bool: cells the boxes (n, 4) overlap (`grounding.covered_cells`, the toy VLM's supervision targets)."""
    from benchmarks.toy.grounding import covered_cells
    from focuskit.core.box import Box

    return torch.stack([covered_cells(Box(*b.tolist()), (SIZE, SIZE), (GRID, GRID)) for b in box])


def episodes(pool: dict[str, torch.Tensor], inst: torch.Tensor, role: torch.Tensor, solo: torch.Tensor,
             query: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Support tokens (the role object alone), query tokens, target cell, target and look-alike boxes."""
    n = torch.arange(len(inst))
    support = pool["alone"][inst, role, solo]
    boxes = pool["boxes"][inst, query]
    target, other = boxes[n, role], boxes[n, 1 - role]
    label = ((centre(target)[:, None] - CELL_CENTRES[None]) ** 2).sum(-1).argmin(-1)
    return support, pool["frames"][inst, query], label, target, other


class ProbeModel(nn.Module):
    def __init__(self, hidden: int, layers: int, heads: int, readout: str) -> None:
        from transformers import Qwen2Config, Qwen2Model

        super().__init__()
        config = Qwen2Config(vocab_size=8, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=64, attn_implementation="eager")  # fmt: skip
        self.lm = Qwen2Model(config)
        self.project = nn.Linear(96, hidden)
        self.cell = nn.Parameter(torch.randn(GRID * GRID, hidden) * 0.02)
        self.segment = nn.Parameter(torch.randn(3, hidden) * 0.02)  # support, query, answer
        self.head = nn.Linear(hidden, GRID * GRID) if readout != "pointer" else nn.Linear(hidden, hidden)
        self.readout = readout

    def forward(self, support: torch.Tensor, query: torch.Tensor, attentions: bool = False) -> Any:
        n = query.shape[0]
        x = torch.cat([self.project(support) + self.cell + self.segment[0], self.project(query) + self.cell
                       + self.segment[1], self.segment[2].expand(n, 1, -1)], 1)  # fmt: skip
        out = self.lm(inputs_embeds=x, output_attentions=attentions)
        last = out.last_hidden_state
        if self.readout == "pointer":
            logits = torch.einsum("nh,nch->nc", self.head(last[:, -1]), last[:, -1 - GRID * GRID : -1])
        else:
            logits = self.head(last[:, -1])
        return logits, out.attentions


def pick_rate(model: ProbeModel, pool: dict[str, torch.Tensor]) -> float:
    n = pool["frames"].shape[0]
    inst = torch.arange(n).repeat(2)
    role = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    support, query, _, target, other = episodes(pool, inst, role, torch.zeros_like(inst), torch.full_like(inst, 5))
    model.eval()
    with torch.no_grad():
        cell = CELL_CENTRES[model(support, query)[0].argmax(-1)]
    model.train()
    return float((((cell - centre(target)) ** 2).sum(-1) < ((cell - centre(other)) ** 2).sum(-1)).float().mean())


def train(variant: str, train_pool: dict[str, torch.Tensor], held: dict[str, torch.Tensor], args: Any) -> dict:
    torch.manual_seed(args.seed)
    model = ProbeModel(args.hidden, args.layers, args.heads, "pointer" if variant == "pointer" else "cls")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    n = train_pool["frames"].shape[0]
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        inst = torch.randint(n, (args.batch,), generator=g)
        role = torch.randint(2, (args.batch,), generator=g)
        solo = torch.randint(3, (args.batch,), generator=g)
        query = torch.randint(6, (args.batch,), generator=g)
        support, q, label, target, _ = episodes(train_pool, inst, role, solo, query)
        aux = variant == "cls+aux" and step <= args.aux_until
        logits, attentions = model(support, q, attentions=aux)
        loss = F.cross_entropy(logits, label)
        if aux:
            mass = (attentions[args.aux_layer][:, 0, -1, -1 - GRID * GRID : -1] * covered(target)).sum(-1)
            loss = loss - torch.log(mass + 1e-6).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            curve.append({"step": step, "pick": pick_rate(model, held), "seconds": round(time.perf_counter() - t0)})
            print(variant, json.dumps(curve[-1]), flush=True)
    return {"variant": variant, "curve": curve, "final_pick": curve[-1]["pick"] if curve else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/toy_readout_probe"))
    parser.add_argument("--variants", nargs="+", default=["cls", "pointer", "cls+aux"],
                        choices=["cls", "pointer", "cls+aux"])  # fmt: skip
    parser.add_argument("--train-instances", type=int, default=1500)
    parser.add_argument("--eval-instances", type=int, default=300)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--aux-layer", type=int, default=2)
    parser.add_argument("--aux-until", type=int, default=2500)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mutations",
        type=int,
        nargs=2,
        default=(3, 3),
        metavar=("MIN", "MAX"),
        help="attributes a look-alike changes (3 3: easy; the toy VLM's data: 1 2)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from focuskit.core.io import atomic_write_json

    torch.set_num_threads(1)
    mutations = (args.mutations[0], args.mutations[1])
    train_pool = load_pool(args.workdir, 211, args.train_instances, mutations)
    held = load_pool(args.workdir, 311, args.eval_instances, mutations)
    runs = [train(v, train_pool, held, args) for v in args.variants]
    atomic_write_json(args.out, {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
