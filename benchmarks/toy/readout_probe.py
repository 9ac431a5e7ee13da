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
  With `--gather-layer L` (scene supports), head 0 of layer L is also trained, from the answer token, to look at
  the supports' marked cells: first gather what the target looks like, then search the query for it.

Three options move the input step by step toward the toy VLM's, to find which step the skill does not survive:
`--support scene` (support frames hold both objects, and a learned embedding added to the target's cells stands
in for its box text, so the support must be read through its box, as in the VLM), `--shots k` (k supports), and
`--filler N` (N learned template tokens before the supports, standing in for the chat template and prompt text).

Each variant prints held-out pick rate (the predicted cell's centre nearer the target's than the look-alike's) on
position-balanced episodes (every held-out instance with each object as the target), and writes
`benchmarks/results/toy_readout_probe.json` (appended to its `runs`, each with its settings).

    python -m benchmarks.toy.readout_probe --steps 4000        # about 4 min per variant on one core
    python -m benchmarks.toy.readout_probe --variants cls+aux --support scene --shots 4 --filler 40
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
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
    from focuskit.core.io import atomic_write_with
    from focuskit.data.synth import SynthConfig

    config = SynthConfig(objects=2, seed=seed, image_size=SIZE, backgrounds=("gradient",), min_scale=0.25,
                         max_scale=0.45, mutations=mutations)  # fmt: skip
    name = f"pool{seed}" if mutations == (3, 3) else f"pool{seed}_m{mutations[0]}{mutations[1]}"
    cache = workdir / f"{name}_{instances}_tokens.pt"
    if cache.is_file():  # the CNN pass is most of a short run's time; the pool is fixed by its seed and options
        return torch.load(cache)
    pool = render_pool(config, workdir / name, instances, 6, alone=3, groups=VISIBLE_GROUPS)
    maps = FeatureMaps(2.0, GRID)

    def tokens(frames: Any) -> np.ndarray:
        return np.stack([maps(f.path) for f in frames])

    out = {
        "frames": torch.tensor(np.stack([tokens(p.frames) for p in pool])),
        "boxes": torch.tensor([[[b.as_list() for b in f.boxes] for f in p.frames] for p in pool]),
        "alone": torch.tensor(np.stack([np.stack([tokens(a) for a in p.alone]) for p in pool])),
    }
    atomic_write_with(cache, lambda path: torch.save(out, path))
    return out


def centre(box: torch.Tensor) -> torch.Tensor:
    return torch.stack([(box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2], -1)


def covered(box: torch.Tensor) -> torch.Tensor:
    """(n, 16) bool: cells the boxes (n, 4) overlap (`grounding.covered_cells`, the toy VLM's supervision targets)."""
    from benchmarks.toy.grounding import covered_cells
    from focuskit.core.box import Box

    return torch.stack([covered_cells(Box(*b.tolist()), (SIZE, SIZE), (GRID, GRID)) for b in box])


@dataclass(frozen=True)
class Episodes:
    """A batch of probe episodes: k supports, one query, the answer cell and the two query boxes."""

    support: torch.Tensor
    """(n, k, 16, 96) CNN tokens of the supports."""
    marked: torch.Tensor
    """(n, k, 16) bool: support cells the target's box covers (all False for solo supports: no box is given)."""
    query: torch.Tensor
    """(n, 16, 96)."""
    label: torch.Tensor
    """(n,) the query cell holding the target's centre."""
    target: torch.Tensor
    other: torch.Tensor
    """(n, 4) the target's and the look-alike's query boxes."""


def episodes(pool: dict[str, torch.Tensor], inst: torch.Tensor, role: torch.Tensor, views: torch.Tensor,
             query: torch.Tensor, scene: bool) -> Episodes:  # fmt: skip
    """`views` (n, k): solo frames of the target (`scene` False) or frames holding both objects, the target's cells
    marked (`scene` True: the stand-in for a support's box text); `query` (n,) a frame index."""
    n = torch.arange(len(inst))
    if scene:
        support = pool["frames"][inst[:, None], views]
        marked = covered(pool["boxes"][inst[:, None], views, role[:, None]].flatten(0, 1)).view(*views.shape, -1)
    else:
        support = pool["alone"][inst[:, None], role[:, None], views]
        marked = torch.zeros(*views.shape, GRID * GRID, dtype=torch.bool)
    boxes = pool["boxes"][inst, query]
    target, other = boxes[n, role], boxes[n, 1 - role]
    label = ((centre(target)[:, None] - CELL_CENTRES[None]) ** 2).sum(-1).argmin(-1)
    return Episodes(support, marked, pool["frames"][inst, query], label, target, other)


def draw_views(batch: int, shots: int, scene: bool, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, shots) distinct support views and (batch,) a query frame that is none of them."""
    if scene:  # 6 frames: supports and query all distinct
        order = torch.argsort(torch.rand(batch, 6, generator=g), -1)
        return order[:, :shots], order[:, shots]
    views = torch.argsort(torch.rand(batch, 3, generator=g), -1)[:, :shots]
    return views, torch.randint(6, (batch,), generator=g)


class ProbeModel(nn.Module):
    """Tokens: [filler template] support 1 .. k, query, answer. `filler` learned template tokens stand in for the
    VLM's chat template and prompt text, which the answer's attention must look past."""

    def __init__(self, hidden: int, layers: int, heads: int, readout: str, filler: int = 0) -> None:
        from transformers import Qwen2Config, Qwen2Model

        super().__init__()
        config = Qwen2Config(vocab_size=8, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=512, attn_implementation="eager")  # fmt: skip
        self.lm = Qwen2Model(config)
        self.project = nn.Linear(96, hidden)
        self.cell = nn.Parameter(torch.randn(GRID * GRID, hidden) * 0.02)
        self.segment = nn.Parameter(torch.randn(3, hidden) * 0.02)  # support, query, answer
        self.box = nn.Parameter(torch.randn(hidden) * 0.02)  # added to a scene support's target cells
        self.filler = nn.Parameter(torch.randn(filler, hidden) * 0.02)
        self.head = nn.Linear(hidden, GRID * GRID) if readout != "pointer" else nn.Linear(hidden, hidden)
        self.readout = readout

    def forward(self, ep: Episodes, attentions: bool = False) -> Any:
        n = ep.query.shape[0]
        support = self.project(ep.support) + self.cell + self.segment[0] + ep.marked[..., None] * self.box
        x = torch.cat([self.filler.expand(n, -1, -1), support.flatten(1, 2), self.project(ep.query) + self.cell
                       + self.segment[1], self.segment[2].expand(n, 1, -1)], 1)  # fmt: skip
        out = self.lm(inputs_embeds=x, output_attentions=attentions)
        last = out.last_hidden_state
        if self.readout == "pointer":
            logits = torch.einsum("nh,nch->nc", self.head(last[:, -1]), last[:, -1 - GRID * GRID : -1])
        else:
            logits = self.head(last[:, -1])
        return logits, out.attentions


def pick_rate(model: ProbeModel, pool: dict[str, torch.Tensor], shots: int, scene: bool) -> float:
    """Held-out, position-balanced: every instance with each object as the target, supports views 0 .. k-1, query
    frame 5."""
    n = pool["frames"].shape[0]
    inst = torch.arange(n).repeat(2)
    role = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    views = torch.arange(shots).expand(len(inst), shots)
    ep = episodes(pool, inst, role, views, torch.full_like(inst, 5), scene)
    model.eval()
    with torch.no_grad():
        cell = CELL_CENTRES[model(ep)[0].argmax(-1)]
    model.train()
    return float((((cell - centre(ep.target)) ** 2).sum(-1) < ((cell - centre(ep.other)) ** 2).sum(-1)).float().mean())


def train(variant: str, train_pool: dict[str, torch.Tensor], held: dict[str, torch.Tensor], args: Any) -> dict:
    torch.manual_seed(args.seed)
    model = ProbeModel(args.hidden, args.layers, args.heads, "pointer" if variant == "pointer" else "cls", args.filler)
    scene = args.support == "scene"
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    n = train_pool["frames"].shape[0]
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        inst = torch.randint(n, (args.batch,), generator=g)
        role = torch.randint(2, (args.batch,), generator=g)
        views, query = draw_views(args.batch, args.shots, scene, g)
        ep = episodes(train_pool, inst, role, views, query, scene)
        aux = variant == "cls+aux" and step <= args.aux_until
        logits, attentions = model(ep, attentions=aux)
        loss = F.cross_entropy(logits, ep.label)
        if aux:
            mass = (attentions[args.aux_layer][:, 0, -1, -1 - GRID * GRID : -1] * covered(ep.target)).sum(-1)
            loss = loss - torch.log(mass + 1e-6).mean()
            if args.gather_layer is not None:  # answer -> the supports' marked (target) cells (scene: checked)
                keys = slice(args.filler, args.filler + ep.marked[0].numel())
                gathered = (attentions[args.gather_layer][:, 0, -1, keys] * ep.marked.flatten(1)).sum(-1)
                loss = loss - torch.log(gathered + 1e-6).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            curve.append(
                {
                    "step": step,
                    "pick": pick_rate(model, held, args.shots, scene),
                    "seconds": round(time.perf_counter() - t0),
                }
            )
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
    parser.add_argument("--gather-layer", type=int, default=None,
                        help="with --support scene and cls+aux: also supervise head 0 of this layer, from the answer "
                        "token, to look at the supports' marked cells (gather, then search)")  # fmt: skip
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
    parser.add_argument("--support", choices=["alone", "scene"], default="alone",
                        help="alone: solo frames of the target; scene: frames with both objects, the target's cells "
                        "marked by a learned embedding (the stand-in for a support's box text)")  # fmt: skip
    parser.add_argument("--shots", type=int, default=1, help="supports per episode (alone: at most 3; scene: 5)")
    parser.add_argument("--filler", type=int, default=0, help="learned template tokens before the supports")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    max_shots = 5 if args.support == "scene" else 3  # solo views per object; scene frames leave one for the query
    if not 1 <= args.shots <= max_shots:
        parser.error(f"--shots {args.shots}: {args.support} supports allow 1-{max_shots}")
    if args.gather_layer is not None and (args.support != "scene" or not 0 <= args.gather_layer < args.layers):
        parser.error(f"--gather-layer {args.gather_layer} needs --support scene and a layer in 0-{args.layers - 1}")
    from focuskit.core.io import atomic_write_json

    torch.set_num_threads(1)
    mutations = (args.mutations[0], args.mutations[1])
    train_pool = load_pool(args.workdir, 211, args.train_instances, mutations)
    held = load_pool(args.workdir, 311, args.eval_instances, mutations)
    settings = {k: str(v) for k, v in vars(args).items() if k != "out"}
    runs = [{**train(v, train_pool, held, args), "settings": settings} for v in args.variants]
    # appended: the file is the record of every probe run (the earliest ones share its top-level settings)
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    data["runs"] = [*data["runs"], *runs]
    atomic_write_json(args.out, data, indent=1)
    print(f"appended {len(runs)} run(s) to {args.out}")


if __name__ == "__main__":
    main()
