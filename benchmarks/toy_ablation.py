"""Toy reproduction of FOCUS's ablations on synthetic episodes, on CPU: Table 3 (SFT / attention loss / GRPO) and
Table 5 (which layers the attention loss uses), with 1/2/4-shot mIoU on held-out episodes.

Pipeline (one command; independent runs go to `--workers` processes, each with `--threads` torch threads):

1. Data (`focuskit.data.synth`):
   - a *pretraining* set with one object per frame (plain "find the object and write its box");
   - an *instance* training set and a held-out evaluation set, with `--objects` look-alikes of the same shape per
     frame (only the supports' instance identifies the target). Training episodes are cut to a random k in 1..4 so
     one model serves every shot count.
2. Pretraining: the tiny Qwen2-VL (random init, `TINY`) is trained with full fine-tuning on the pretraining set. This
   stands in for the pretrained VLM of the paper: a model that can write boxes but was never taught in-context
   instance matching. Row "base".
3. From the base, in parallel:
   - SFT (full fine-tuning of the language model by default; `--sft-lora` for the paper's LoRA r=8, see `Scale`);
   - SFT + attention loss (the paper's lambda 0.05, margin 0.01) on the first 5, last 5 and all decoder layers;
   - GRPO alone.
4. GRPO from the SFT model and from the SFT + attention-loss (first 5) model. GRPO trains LoRA adapters
   (r=8, alpha=16), with the adapter-disabled model as the KL reference.
5. Every model is evaluated with `VLMLocalizer` (greedy) through `focuskit.eval.evaluate` at k = 1, 2, 4.

The paper's claims checked here: SFT > base; attention loss adds to SFT; GRPO adds most after SFT; GRPO alone helps
less; first-5 layers is the best choice for the attention loss. The numbers are what they are at this scale:
nothing here is tuned to make the ordering come out.

    .venv/bin/python benchmarks/toy_ablation.py --quick     # a few minutes: checks the pipeline, numbers are noise
    .venv/bin/python benchmarks/toy_ablation.py             # the full run (about 30 min on 2 free cores)

Writes `benchmarks/results/toy_ablation[_quick].json` and `.md`.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import multiprocessing
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from focuskit.core.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
SHOTS = (1, 2, 4)
TINY = {"num_layers": 10, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "num_kv_heads": 2}
"""10 decoder layers, so "first 5", "last 5" and "all" are three different layer sets as in the paper's Table 5."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one run; `FULL` fits about 30 minutes on 2 otherwise idle cores, `QUICK` a few minutes."""

    pre_episodes: int
    pre_steps: int
    pre_lr: float
    train_episodes: int
    sft_steps: int
    sft_lr: float
    grpo_steps: int
    grpo_lr: float
    eval_episodes: int
    batch_size: int = 8
    objects: int = 2
    """Same-shape objects per instance frame (target + look-alikes); chance level of picking the target is 1/objects."""
    image_size: int = 112
    backgrounds: tuple[str, ...] = ("gradient",)
    """Plain gradients: the tiny model has to learn to see objects from scratch, so clutter is left out of the toy."""
    min_scale: float = 0.25
    max_scale: float = 0.45
    sft_lora: bool = False
    """SFT with the paper's LoRA (r=8) instead of full fine-tuning. On this 0.6 M-parameter model LoRA SFT barely
    moves the LM loss in the step budget (measured: 0.766 -> 0.734 over 400 steps), so the default trains all
    language-model weights; GRPO always trains LoRA adapters (its reference is the adapter-disabled model)."""


FULL = Scale(
    pre_episodes=1500, pre_steps=1500, pre_lr=2e-3, train_episodes=800, sft_steps=400, sft_lr=1e-3,
    grpo_steps=80, grpo_lr=1e-3, eval_episodes=100,
)  # fmt: skip
QUICK = Scale(
    pre_episodes=200, pre_steps=60, pre_lr=2e-3, train_episodes=100, sft_steps=20, sft_lr=1e-3,
    grpo_steps=4, grpo_lr=1e-3, eval_episodes=12,
)  # fmt: skip


# --- jobs (top-level functions: they run in worker processes) ----------------------------------------------------
def _init_worker(threads: int) -> None:
    """Pin torch threads, and silence the trainers' per-step logs and progress bars: results, and the traceback of
    any error, come back to the main process through the futures."""
    import logging
    import os
    import sys
    import warnings

    import torch

    torch.set_num_threads(threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker process


def _evaluate(model_dir: Path, eval_file: Path) -> dict[str, Any]:
    from focuskit.data.episodes_jsonl import load_episodes
    from focuskit.eval.runner import evaluate
    from focuskit.localizers.vlm import VLMLocalizer, VLMLocalizerConfig

    localizer = VLMLocalizer.from_pretrained(model_dir, VLMLocalizerConfig(batch_size=16, max_new_tokens=28))
    episodes = load_episodes(eval_file)
    result = evaluate(localizer, episodes, SHOTS, progress=False)
    return {
        "miou": {s.k: round(s.miou, 4) for s in result.summaries},
        "acc50": {s.k: round(s.acc_at_50, 4) for s in result.summaries},
        "parsed": round(sum(r["box"] is not None for r in result.predictions) / max(1, len(result.predictions)), 4),
        **_matching_stats(result.predictions, episodes),
    }


def _matching_stats(predictions: list[dict[str, Any]], episodes: list[Any]) -> dict[str, float]:
    """What an mIoU change is made of: does the answer pick the target rather than its look-alike, and how large
    are the boxes?

    `pick_rate`: fraction of answers whose centre is nearer the target's centre than any look-alike's (chance:
    1/objects). `area_ratio`: median of answer area / target area (IoU rewards hedging with larger boxes when unsure).
    """
    by_id = {ep.id: ep for ep in episodes}
    picks, ratios = [], []
    for rec in predictions:
        ep = by_id[rec["id"]]
        if rec["box"] is None or ep.query_box is None:
            continue
        x1, y1, x2, y2 = rec["box"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        tx, ty = ep.query_box.center
        target = (cx - tx) ** 2 + (cy - ty) ** 2
        others = [((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in ep.meta["query_distractors"]]
        picks.append(float(all(target < o for o in others)))
        ratios.append(max(0.0, x2 - x1) * max(0.0, y2 - y1) / max(ep.query_box.area, 1e-9))
    return {
        "pick_rate": round(statistics.fmean(picks), 4) if picks else float("nan"),
        "area_ratio": round(statistics.median(ratios), 4) if ratios else float("nan"),
    }


def job_pretrain(data: str, out: str, scale: Scale, seed: int) -> dict[str, Any]:
    from focuskit.models.vlms.tiny import TinyVLMConfig
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import AttentionLossConfig, SFTConfig

    start = time.perf_counter()
    config = SFTConfig(
        model="tiny", tiny=TinyVLMConfig(**TINY, seed=seed), data=[data], lora=None,
        attention_loss=AttentionLossConfig(enabled=False), max_steps=scale.pre_steps, learning_rate=scale.pre_lr,
        batch_size=scale.batch_size, warmup_ratio=0.03, max_grad_norm=1.0, cache_encoded=True, output_dir=out,
        logging_steps=max(1, scale.pre_steps // 20), save_steps=10**9, progress_bar=False, seed=seed,
    )  # fmt: skip
    result = train_sft(config)
    lm = result.series("lm_loss")
    return {"model": str(result.final_model), "seconds": time.perf_counter() - start, "lm_loss": [lm[0], lm[-1]]}


def job_sft(
    name: str, base: str, data: str, eval_file: str, out: str, scale: Scale, layers: str | None, seed: int
) -> dict[str, Any]:
    from focuskit.models.vlms.factory import LoraSettings
    from focuskit.training.run_sft import train_sft
    from focuskit.training.sft_config import AttentionLossConfig, SFTConfig

    start = time.perf_counter()
    attention = (
        AttentionLossConfig(enabled=True, layers=layers, k=5)  # type: ignore[arg-type]
        if layers is not None
        else AttentionLossConfig(enabled=False)
    )
    config = SFTConfig(
        model=base, data=[data], lora=LoraSettings() if scale.sft_lora else None, attention_loss=attention,
        max_steps=scale.sft_steps,
        learning_rate=scale.sft_lr, batch_size=scale.batch_size, warmup_ratio=0.03, max_grad_norm=1.0,
        cache_encoded=True, output_dir=out, logging_steps=max(1, scale.sft_steps // 20), save_steps=10**9,
        progress_bar=False, seed=seed,
    )  # fmt: skip
    result = train_sft(config)
    train_seconds = time.perf_counter() - start
    row: dict[str, Any] = {"name": name, "model": str(result.final_model), "train_seconds": train_seconds}
    for key in ("lm_loss", "attn_loss", "attn_margin"):
        series = result.series(key)
        if series:
            row[key] = [round(series[0], 4), round(series[-1], 4)]
    row.update(_evaluate(result.final_model, Path(eval_file)))
    row["seconds"] = time.perf_counter() - start
    return row


def job_grpo(
    name: str, start_model: str, data: str, eval_file: str, out: str, scale: Scale, seed: int
) -> dict[str, Any]:
    from focuskit.training.grpo_config import GRPOConfig
    from focuskit.training.run_grpo import train_grpo

    start = time.perf_counter()
    config = GRPOConfig(
        model=start_model, data=[data], output_dir=out, group_size=4, batch_size=8, max_steps=scale.grpo_steps,
        learning_rate=scale.grpo_lr, lr_scheduler="constant_with_warmup", max_new_tokens=28, temperature=1.0,
        beta=0.04, save_merged=True, cache_encoded=True, progress_bar=False, seed=seed,
    )  # fmt: skip
    result = train_grpo(config)
    train_seconds = time.perf_counter() - start
    n = max(1, len(result.log_history) // 5)
    row: dict[str, Any] = {"name": name, "model": str(result.final_model), "train_seconds": train_seconds}
    for key in ("reward", "iou", "format_rate", "reward_std_within", "kl"):
        series = result.series(key)
        if series:
            row[f"train_{key}"] = [round(statistics.fmean(series[:n]), 4), round(statistics.fmean(series[-n:]), 4)]
    row["warnings"] = result.warnings
    row.update(_evaluate(result.final_model, Path(eval_file)))
    row["seconds"] = time.perf_counter() - start
    return row


def job_eval(name: str, model: str, eval_file: str) -> dict[str, Any]:
    start = time.perf_counter()
    row: dict[str, Any] = {"name": name, "model": model, **_evaluate(Path(model), Path(eval_file))}
    row["seconds"] = time.perf_counter() - start
    return row


# --- orchestration -------------------------------------------------------------------------------------------------
def make_data(root: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """Pretraining, instance-training (mixed k) and held-out evaluation episode files."""
    from focuskit.data.episodes_jsonl import load_episodes, write_episodes
    from focuskit.data.synth import SynthConfig, write_synth_dataset

    common = {
        "shots": 4,
        "image_size": scale.image_size,
        "backgrounds": scale.backgrounds,
        "min_scale": scale.min_scale,
        "max_scale": scale.max_scale,
    }
    pre = write_synth_dataset(
        SynthConfig(episodes=scale.pre_episodes, objects=1, seed=seed * 10 + 1, **common), root / "pre", progress=False
    )
    train = write_synth_dataset(
        SynthConfig(episodes=scale.train_episodes, objects=scale.objects, seed=seed * 10 + 2, **common),
        root / "train",
        progress=False,
    )
    evaluation = write_synth_dataset(
        SynthConfig(episodes=scale.eval_episodes, objects=scale.objects, seed=seed * 10 + 3, **common),
        root / "eval",
        progress=False,
    )
    rng = random.Random(seed)
    files = {"eval": evaluation}
    for name, path in (("pre", pre), ("train", train)):
        mixed = path.with_name("mixed_k.jsonl")
        write_episodes([ep.with_shots(rng.randint(1, ep.k)) for ep in load_episodes(path)], mixed)
        files[name] = mixed
    return files


ROWS_TABLE3 = [
    ("base", "base (pretrained tiny model, no task training)"),
    ("grpo", "+ GRPO"),
    ("sft", "+ SFT"),
    ("sft_grpo", "+ SFT + GRPO"),
    ("sft_attn_first5", "+ SFT + Attn"),
    ("sft_attn_first5_grpo", "+ SFT + Attn + GRPO"),
]
ROWS_TABLE5 = [
    ("sft", "SFT, no attention loss"),
    ("sft_attn_first5", "Attn loss, first 5 layers"),
    ("sft_attn_last5", "Attn loss, last 5 layers"),
    ("sft_attn_all", "Attn loss, all 10 layers"),
]


def run(scale: Scale, workdir: Path, workers: int, threads: int, seed: int, reuse_base: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    files = make_data(workdir / "data", scale, seed)
    data_seconds = time.perf_counter() - t0
    print(f"data: {data_seconds:.0f}s", flush=True)
    data, eval_file = str(files["train"]), str(files["eval"])
    runs = workdir / "runs"
    ctx = multiprocessing.get_context("spawn")
    rows: dict[str, dict[str, Any]] = {}
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        reused = runs / "base" / "final"
        if reuse_base and (reused / "config.json").is_file():
            pre = {"model": str(reused), "seconds": 0.0, "lm_loss": [float("nan")] * 2, "reused": True}
        else:
            pre = pool.submit(job_pretrain, str(files["pre"]), str(runs / "base"), scale, seed).result()
        print(f"pretraining: {pre['seconds']:.0f}s, lm_loss {pre['lm_loss'][0]:.3f} -> {pre['lm_loss'][1]:.3f}")
        base = pre["model"]
        pending: dict[cf.Future[dict[str, Any]], str] = {
            pool.submit(job_sft, "sft", base, data, eval_file, str(runs / "sft"), scale, None, seed): "sft",
            pool.submit(
                job_sft, "sft_attn_first5", base, data, eval_file, str(runs / "attn_first5"), scale, "first_k", seed
            ): "sft_attn_first5",
            pool.submit(job_grpo, "grpo", base, data, eval_file, str(runs / "grpo"), scale, seed): "grpo",
            pool.submit(job_eval, "base", base, eval_file): "base",
            pool.submit(
                job_sft, "sft_attn_last5", base, data, eval_file, str(runs / "attn_last5"), scale, "last_k", seed
            ): "sft_attn_last5",
            pool.submit(
                job_sft, "sft_attn_all", base, data, eval_file, str(runs / "attn_all"), scale, "all", seed
            ): "sft_attn_all",
        }
        follow_up = {"sft": "sft_grpo", "sft_attn_first5": "sft_attn_first5_grpo"}
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                name = pending.pop(fut)
                row = fut.result()
                rows[name] = row
                print(f"{name}: mIoU {row['miou']} ({row['seconds']:.0f}s)", flush=True)
                if name in follow_up:
                    nxt = follow_up[name]
                    f = pool.submit(job_grpo, nxt, row["model"], data, eval_file, str(runs / nxt), scale, seed)
                    pending[f] = nxt
    return {
        "scale": asdict(scale),
        "tiny_model": TINY,
        "seed": seed,
        "workers": workers,
        "threads": threads,
        "pretraining": pre,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }


# --- reporting -----------------------------------------------------------------------------------------------------
def _mean(row: dict[str, Any]) -> float:
    return statistics.fmean(row["miou"][k] for k in SHOTS)


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    head = (
        "| | "
        + " | ".join(f"{k}-shot mIoU" for k in SHOTS)
        + " | mean | target picked | box area / truth |\n|---|"
        + "---:|" * (len(SHOTS) + 3)
    )

    def line(key: str, label: str) -> str:
        r = rows[key]
        cells = [f"{100 * r['miou'][k]:.1f}" for k in SHOTS] + [f"{100 * _mean(r):.1f}"]
        cells += [f"{100 * r['pick_rate']:.0f}%", f"{r['area_ratio']:.2f}"]
        return f"| {label} | " + " | ".join(cells) + " |"

    s = result["scale"]
    out = [
        f"Synthetic instance episodes: {s['objects']} same-shape look-alikes per {s['image_size']} px frame, "
        f"{s['eval_episodes']} held-out episodes per k; tiny Qwen2-VL with {TINY['num_layers']} layers, "
        f"hidden {TINY['hidden_size']}. Total {result['seconds'] / 60:.1f} min "
        f"({result['workers']} workers x {result['threads']} thread).",
        "",
        f"'target picked': answers centred nearer the target than its look-alike (chance {100 / s['objects']:.0f}%). "
        "'box area / truth': median ratio of answer to target box area.",
        "",
        "**Table 3 (rows of the paper)**",
        "",
        head,
        *(line(k, label) for k, label in ROWS_TABLE3 if k in rows),
        "",
        "**Table 5 (attention-loss layers)**",
        "",
        head,
        *(line(k, label) for k, label in ROWS_TABLE5 if k in rows),
        "",
    ]
    grpo_lines = []
    for key, start in (("sft_grpo", "sft"), ("sft_attn_first5_grpo", "sft_attn_first5"), ("grpo", "base")):
        if key in rows and start in rows:
            r = rows[key]
            before, after = _mean(rows[start]), _mean(r)
            train = r.get("train_reward", [float("nan")] * 2)
            grpo_lines.append(
                f"| {start} -> {key} | {100 * before:.1f} | {100 * after:.1f} | {100 * (after - before):+.1f} | "
                f"{train[0]:.3f} -> {train[1]:.3f} | {len(r.get('warnings', []))} |"
            )
    if grpo_lines:
        out += [
            "**GRPO on held-out episodes** (mean mIoU over k; training reward = mean of first/last fifth of steps)",
            "",
            "| run | before | after | change | training reward | diagnostics warnings |",
            "|---|---:|---:|---:|---|---:|",
            *grpo_lines,
            "",
        ]
    return "\n".join(out)


def ordering_checks(result: dict[str, Any]) -> dict[str, bool]:
    """The paper's qualitative claims, evaluated on the mean mIoU over k (True = holds here)."""
    rows = result["rows"]
    m = {k: _mean(v) for k, v in rows.items()}
    checks = {
        "SFT > base": ("sft", "base"),
        "SFT + Attn > SFT": ("sft_attn_first5", "sft"),
        "SFT + GRPO > SFT": ("sft_grpo", "sft"),
        "SFT + Attn + GRPO > SFT + Attn": ("sft_attn_first5_grpo", "sft_attn_first5"),
        "SFT + Attn + GRPO is the best row": None,
        "GRPO alone < SFT + GRPO": ("sft_grpo", "grpo"),
        "first 5 layers > last 5 layers": ("sft_attn_first5", "sft_attn_last5"),
        "first 5 layers > all layers": ("sft_attn_first5", "sft_attn_all"),
    }
    out = {}
    for label, pair in checks.items():
        if pair is None:
            if "sft_attn_first5_grpo" in m:
                others = [v for k, v in m.items() if k != "sft_attn_first5_grpo"]
                out[label] = m["sft_attn_first5_grpo"] > max(others)
            continue
        a, b = pair
        if a in m and b in m:
            out[label] = m[a] > m[b]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1 is fastest when shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft-lora", action="store_true", help="SFT with LoRA r=8 (the paper's) instead of full FT")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and models here (default: temporary)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reuse-base", action="store_true", help="reuse WORKDIR/runs/base/final from an earlier run")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.sft_lora:
        scale = dataclasses.replace(scale, sft_lora=True)
    name = "toy_ablation" + ("_quick" if args.quick else "") + ("_sft_lora" if args.sft_lora else "")

    with tempfile.TemporaryDirectory(prefix="toy_ablation_") as tmp:
        workdir = args.workdir or Path(tmp)
        result = run(scale, workdir, args.workers, args.threads, args.seed, reuse_base=args.reuse_base)
    result["checks"] = ordering_checks(result)
    table = markdown(result)
    checks = "\n".join(f"- {'holds' if ok else 'does NOT hold'}: {label}" for label, ok in result["checks"].items())
    text = f"{table}\n**The paper's ordering at this scale**\n\n{checks}\n"
    print("\n" + text)
    atomic_write_json(args.out / f"{name}.json", result)
    atomic_write_text(args.out / f"{name}.md", text)
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.md')}")


if __name__ == "__main__":
    main()
