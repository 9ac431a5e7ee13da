"""Orchestration of the toy ablation: data, feature cache, base, rows (in worker processes), report.

Row names: `locate` (the locate-pretrained model), `base` (locate, then the pointer-supervised "match" stages when the
preset has them; the same model as `locate` otherwise; or a base built earlier, passed as `base=`), `sft`,
`sft_attn_{first5,last5,all}`,
`grid_l{lambda}_m{margin}` (attention loss on the first 5 layers), and `<row>_grpo` / `grpo` (from base) for GRPO.
Every trained row is trained once per seed from the same base (the seed drives SFT/GRPO initialisation of the
data order and LoRA), and evaluated on the same held-out episodes, so rows can be compared pairwise.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.toy.presets import Preset

ATTN_LAYERS = {"first5": "first_k", "last5": "last_k", "all": "all"}


def _init_worker(threads: int, features: str) -> None:
    """Pin torch threads, silence trainer logs, and load the shared CNN features (one CNN pass per frame in all)."""
    import logging
    import os
    import sys
    import warnings

    import torch

    from focuskit.models.vlms.cnn_qwen2_vl import load_features

    torch.set_num_threads(threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker process
    if features:
        load_features(features)


def _eval(model: str, eval_file: str, shots: tuple[int, ...], explain: int = 0) -> dict[str, Any]:
    """Held-out metrics of `model`, plus the mean attention shares of its answers on `explain` episodes."""
    from benchmarks.toy.metrics import attention_shares, evaluate_fast
    from focuskit.data.episodes_jsonl import load_episodes

    episodes = load_episodes(Path(eval_file))
    row = evaluate_fast(model, episodes, shots)
    if explain:
        row["attention_shares"] = attention_shares(model, episodes, explain)
    return row


def attention_k(preset: Preset) -> int:
    """Layers in "first k" / "last k": the paper's 5 of 28; here half the model (5 of 6 would be "all")."""
    return max(1, min(5, preset.model["num_layers"] // 2))


def attention_settings(name: str, preset: Preset) -> dict[str, Any] | None:
    """The attention-loss fields of row `name` (None: no attention loss)."""
    k = attention_k(preset)
    if name.startswith("sft_attn_"):
        return {"k": k, **preset.attention, "layers": ATTN_LAYERS[name.removeprefix("sft_attn_")]}
    if name.startswith("grid_"):
        lam, margin = name.removeprefix("grid_l").split("_m")
        return {"k": k, **preset.attention, "layers": "first_k", "weight": float(lam), "margin": float(margin)}
    return None


def job_sft(name: str, base: str, data: str, eval_file: str, out: str, preset: Preset, seed: int) -> dict[str, Any]:
    from benchmarks.toy.recipe import Stage, sft_stage

    extra: dict[str, Any] = {}
    curve = preset.curve_points if name == "sft" and seed == preset.seeds[0] else 0
    if curve:
        extra = {"save_strategy": "steps", "save_steps": max(1, preset.sft_steps // curve), "save_total_limit": None}
    if preset.sft_schedule:
        extra["lr_scheduler_type"] = preset.sft_schedule
    stage = Stage(data, preset.sft_steps, preset.sft_lr, preset.batch_size, attention_settings(name, preset),
                  seed=seed, extra=extra, bf16=preset.bf16)  # fmt: skip
    row = sft_stage(base, stage, Path(out))
    row.update(name=name, seed=seed, **_eval(row["model"], eval_file, preset.shots, preset.explain_episodes))
    if curve:
        points = []
        for ckpt in sorted(Path(out).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            r = _eval(str(ckpt), eval_file, (max(preset.shots),))
            points.append({"step": int(ckpt.name.split("-")[1]), "miou": r["miou"], "pick_rate": r["pick_rate"]})
        row["learning_curve"] = points
    return row


def job_grpo(name: str, start: str, data: str, eval_file: str, out: str, preset: Preset, seed: int) -> dict[str, Any]:
    from benchmarks.toy.recipe import grpo_stage

    row = grpo_stage(start, data, Path(out), steps=preset.grpo_steps, lr=preset.grpo_lr, seed=seed)
    row.update(name=name, seed=seed, **_eval(row["model"], eval_file, preset.shots, preset.explain_episodes))
    return row


def job_eval(name: str, model: str, eval_file: str, preset: Preset, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    row = {"name": name, "seed": seed, "model": model, **_eval(model, eval_file, preset.shots, preset.explain_episodes)}
    row["seconds"] = time.perf_counter() - t0
    return row


def make_data(preset: Preset, root: Path, *, pretrain: bool = True) -> dict[str, Any]:
    """Frame pools (locate / train / held-out), episode files (the base's only with `pretrain`), and frame paths."""
    from benchmarks.toy.pool import render_pool, sample_episodes, write_pool_episodes
    from focuskit.data.synth import SynthConfig

    common: dict[str, Any] = {"image_size": preset.image_size, "backgrounds": preset.backgrounds,
                              "min_scale": preset.min_scale, "max_scale": preset.max_scale}  # fmt: skip
    if preset.mutations:
        common["mutations"] = preset.mutations
    t0 = time.perf_counter()
    pre = (
        render_pool(SynthConfig(objects=1, seed=101, **common), root / "pre", preset.pre_instances, 5)
        if pretrain
        else []
    )
    train = render_pool(SynthConfig(objects=preset.objects, seed=102, **common), root / "train",
                        preset.train_instances, preset.frames, alone=preset.alone, groups=preset.groups,
                        alone_scale=preset.alone_scale)  # fmt: skip
    held = render_pool(SynthConfig(objects=preset.objects, seed=103, **common), root / "eval",
                       preset.eval_episodes, 5, groups=preset.groups)  # fmt: skip
    n = preset.batch_size
    files = {
        "train": write_pool_episodes(
            sample_episodes(
                train,
                preset.sft_steps * n,
                shots=(1, 4),
                seed=2,
                copy_rate=preset.copy_rate,
                swap_roles=preset.swap_roles,
                clean_rate=preset.clean_rate,
            ),
            root / "train.jsonl",
        ),
        # two held-out episodes per held-out instance: 4 supports, evaluated with the first 1, 2 and 4;
        # both objects as the target (same frames): position-balanced, see pool.sample_episodes(role=)
        "eval": write_pool_episodes(
            [
                ep
                for role in (0, 1)
                for ep in sample_episodes(
                    held, preset.eval_episodes, shots=(4, 4), seed=3, prefix=f"heldout{role}", distinct=True, role=role
                )
            ],
            root / "eval.jsonl",
        ),
    }
    if pretrain:
        pre_episodes = sample_episodes(pre, preset.pre_steps * preset.pre_batch_size, shots=(1, 4), seed=1)
        files["pre"] = write_pool_episodes(pre_episodes, root / "pre.jsonl")
    for i, m in enumerate(preset.match if pretrain else ()):  # the base's pointer-supervised stages, own draws
        seed = 4 + i if m.episode_seed is None else m.episode_seed
        match = sample_episodes(train, m.steps * m.batch_size, shots=m.shots, seed=seed, swap_roles=preset.swap_roles,
                                clean_rate=m.clean_rate)  # fmt: skip
        files[f"match{i}"] = write_pool_episodes(match, root / f"match{i}.jsonl")
    frames = [f.path for pool in (pre, train, held) for inst in pool for f in inst.frames]
    if pretrain or preset.clean_rate > 0:  # solo frames are seen only by episodes with target-alone supports
        frames += [f.path for inst in train for solo in inst.alone for f in solo]
    return {"files": {k: str(v) for k, v in files.items()}, "frames": frames, "seconds": time.perf_counter() - t0}


def pretrain(preset: Preset, init: Path, files: dict[str, str], workdir: Path, progress: Any) -> list[dict[str, Any]]:
    """Locate, then the match stages in order: the stage results, the last one being the base."""
    from benchmarks.toy.recipe import Stage, sft_stage

    locate = sft_stage(init, Stage(files["pre"], preset.pre_steps, preset.pre_lr, preset.pre_batch_size,
                                   bf16=preset.bf16), workdir / "base")  # fmt: skip
    progress(f"locate: {locate['seconds']:.0f}s, lm_loss {locate['curves']['lm_loss'][0]:.3f} -> "
             f"{locate['curves']['lm_loss'][-1]:.3f}")  # fmt: skip
    stages = [{"name": "locate", **locate}]
    for i, m in enumerate(preset.match):
        stage = Stage(files[f"match{i}"], m.steps, m.lr, m.batch_size, bf16=preset.bf16, pointer=m.pointer,
                      extra={"lr_scheduler_type": m.schedule})  # fmt: skip
        progress(f"match stage {i + 1}/{len(preset.match)}: {m.steps} steps of batch {m.batch_size} ...")
        res = sft_stage(stages[-1]["model"], stage, workdir / f"match{i}")
        stages.append({"name": f"match{i}", **res})
        progress(f"match stage {i + 1}: {res['seconds']:.0f}s, search mass "
                 f"{res['curves']['pointer_search_mass'][-1]:.2f}")  # fmt: skip
    return stages


def run(preset: Preset, workdir: Path, *, base_model: Path | None = None, pretrain_only: bool = False,
        progress: Any = print) -> dict[str, Any]:  # fmt: skip
    """The whole run; `base_model`: a base built earlier (`--pretrain-only`) replaces locate + match."""
    from benchmarks.toy.recipe import build_base, precompute_features
    from focuskit.core.io import atomic_write_json
    from focuskit.models.vlms.cnn_qwen2_vl import load_features

    t0 = time.perf_counter()
    data = make_data(preset, workdir / "data", pretrain=base_model is None)
    progress(f"data: {len(data['frames'])} frames in {data['seconds']:.0f}s")
    init = build_base(workdir / "init", preset.model, seed=0)
    feats = workdir / "features.pt"
    fstats = precompute_features(init, data["frames"], feats)
    progress(f"CNN features: {fstats['images']} images in {fstats['seconds']:.0f}s")
    load_features(feats)
    files = data["files"]
    if base_model is None:
        stages = pretrain(preset, init, files, workdir, progress)
    else:
        stages = [{"name": "given", "model": str(base_model), "seconds": 0.0, "curve_steps": [], "curves": {}}]
    base, locate = stages[-1], stages[0]
    head: dict[str, Any] = {"preset": asdict(preset), "base": dict(base), "pretrain": stages,
                            "base_given": str(base_model) if base_model else None}  # fmt: skip
    if pretrain_only:
        return {**head, "rows": [], "seconds": time.perf_counter() - t0, "workdir": str(workdir)}
    rows: list[dict[str, Any]] = []
    runs = workdir / "runs"
    ctx = multiprocessing.get_context("spawn")
    sft_names = [r for r in preset.rows if not r.endswith("_grpo") and r != "grpo"]
    grid_names = [f"grid_l{lam}_m{m}" for lam, m in preset.grid]
    follow = {r.removesuffix("_grpo"): r for r in preset.rows if r.endswith("_grpo")}
    with cf.ProcessPoolExecutor(preset.workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(preset.threads, str(feats))) as pool:  # fmt: skip
        pending: dict[cf.Future[dict[str, Any]], str] = {}
        pending[pool.submit(job_eval, "base", base["model"], files["eval"], preset, 0)] = "base"
        if len(stages) > 1:
            pending[pool.submit(job_eval, "locate", locate["model"], files["eval"], preset, 0)] = "locate"
        for seed in preset.seeds:
            for name in sft_names + (grid_names if seed == preset.seeds[0] else []):
                out = str(runs / f"{name}_s{seed}")
                fut = pool.submit(job_sft, name, base["model"], files["train"], files["eval"], out, preset, seed)
                pending[fut] = name
            if "grpo" in preset.rows and preset.grpo_steps:
                out = str(runs / f"grpo_s{seed}")
                pending[pool.submit(job_grpo, "grpo", base["model"], files["train"], files["eval"], out, preset,
                                    seed)] = "grpo"  # fmt: skip
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                pending.pop(fut)
                row = fut.result()
                rows.append(row)
                atomic_write_json(workdir / "rows_so_far.json", rows)  # a run cut short keeps its finished rows
                k = max(preset.shots)
                progress(f"{row['name']} seed {row['seed']}: pick {row['pick_rate'][k]:.3f} mIoU@{k} "
                         f"{row['miou'][k]:.3f} ({row.get('seconds', 0):.0f}s)")  # fmt: skip
                nxt = follow.get(row["name"])
                if nxt and preset.grpo_steps:
                    out = str(runs / f"{nxt}_s{row['seed']}")
                    fut2 = pool.submit(job_grpo, nxt, row["model"], files["train"], files["eval"], out, preset,
                                       row["seed"])  # fmt: skip
                    pending[fut2] = nxt
    return {
        **head,
        "data_seconds": data["seconds"],
        "feature_seconds": fstats["seconds"],
        "frames": len(data["frames"]),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "workdir": str(workdir),
    }
