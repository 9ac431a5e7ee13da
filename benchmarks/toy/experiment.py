"""One learnability experiment of docs/toy_ablation.md: pools, CNN features, locate, then a chain of instance-SFT
stages (a curriculum), with held-out pick rate / mIoU at k = 4 after each stage and at checkpoints (learning curve).

    python -m benchmarks.toy.experiment --name E --groups visible --cnn-scale 2 \\
        --stages clean:800 mix0.75:1600 --workdir /tmp/toyexp/E

A stage is `KIND:STEPS` with KIND `clean` (supports show the target alone), `mixF` (a fraction F of clean
episodes, the rest full ones), `full`, or `copyF` (a fraction F of "copy the support box" episodes). `--base DIR`
reuses a locate model (and its features) from an earlier experiment with the same data options.
Appends the result to `benchmarks/results/toy_experiments.json` under `runs[name]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parents[1] / "results" / "toy_experiments.json"


def parse_stage(text: str) -> tuple[str, float, int]:
    kind, steps = text.removesuffix("+p").split(":")
    for prefix in ("mix", "copy"):
        if kind.startswith(prefix):
            return prefix, float(kind.removeprefix(prefix)), int(steps)
    return kind, 1.0 if kind == "clean" else 0.0, int(steps)


def plot_experiments(path: Path, names: list[str]) -> Path:
    """Held-out pick rate (full and clean-support episodes) vs instance-SFT steps for the experiments `names`."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from focuskit.core.io import atomic_write_figure

    runs = json.loads(RESULTS.read_text())["runs"]
    fig, ax = plt.subplots(figsize=(9.5, 4))
    for name in names:
        run = runs[name]
        pts = [
            {"step": run.get("start_step", 0), "pick": run["base"]["pick"], "clean_pick": run["base"]["clean_pick"]},
            *run["curve"],
        ]
        batch, k = run.get("batch", 8), run.get("eval_k", 4)
        looks = "easy" if run.get("mutations") == [3, 3] else "hard"  # 3 changes: every visible attribute differs
        label = f"{name} ({looks} look-alikes, batch {batch}, k={k})"
        line = ax.plot([p["step"] for p in pts], [100 * p["pick"] for p in pts], "o-", label=f"{label}: full")[0]
        ax.plot([p["step"] for p in pts], [100 * p["clean_pick"] for p in pts], "x--", color=line.get_color(),
                label=f"{label}: clean supports")  # fmt: skip
    ax.axhline(50, color="gray", ls=":", label="chance, 2 objects")
    ax.axhline(80, color="black", ls=":", lw=0.8, label="goal")
    ax.set_xlabel("instance-SFT steps (after locate; a continued run starts at its base's steps)")
    ax.set_ylabel("held-out target pick %")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves stay visible
    fig.tight_layout()
    return atomic_write_figure(path, fig, dpi=110)


def _json_object(parser: argparse.ArgumentParser, flag: str, text: str) -> dict[str, Any] | None:
    """`text` parsed as a JSON object (None when empty); anything else is a one-line usage error naming `flag`."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        parser.error(f"{flag} is not JSON ({e.msg}): {text!r}")
    if not isinstance(value, dict):
        parser.error(f"{flag} must be a JSON object, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--plot", nargs="+", default=None, help="only plot these experiments' curves to --workdir")
    parser.add_argument("--groups", choices=("all", "visible"), default="visible")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--cnn-scale", type=float, default=2.0)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--locate-steps", type=int, default=800)
    parser.add_argument("--objects", type=int, default=2, help="objects per frame: target + look-alikes")
    parser.add_argument(
        "--mutations",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="attributes a look-alike changes (default: synth's 1-2; 3 3: easy look-alikes)",
    )
    parser.add_argument(
        "--alone-scale",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="size of the solo (clean-support) objects, e.g. 0.6 0.7: they fill the frame",
    )
    parser.add_argument("--train-shots", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"))
    parser.add_argument("--eval-shots", type=int, default=4, help="k of the held-out episodes")
    parser.add_argument("--model-json", default="", help='CNNVLMConfig overrides, e.g. \'{"projector": "linear"}\'')
    parser.add_argument("--train-instances", type=int, default=1200)
    parser.add_argument("--eval-instances", type=int, default=300)
    parser.add_argument("--stages", nargs="+", default=["clean:800", "mix0.75:1600"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8, help="instance-stage batch size")
    parser.add_argument(
        "--schedule",
        default="cosine",
        choices=("cosine", "constant_with_warmup", "linear"),
        help="instance-stage learning-rate schedule (the read-out probe's is constant)",
    )
    parser.add_argument("--attention", default="", help="JSON AttentionLossConfig fields for every stage (empty: off)")
    parser.add_argument("--pointer", default="{}", help="JSON PointerConfig fields for the stages marked +p")
    parser.add_argument("--base", type=Path, default=None, help="reuse this locate model (same data options)")
    parser.add_argument("--start-step", type=int, default=0,
                        help="continue a run whose --base is its last stage's model: curve steps count from here and "
                             "stage episodes are drawn afresh (seeded by it)")  # fmt: skip
    parser.add_argument("--reeval", nargs="+", default=None, help="only evaluate these models (balanced held-out)")
    parser.add_argument("--curve", type=int, default=4, help="checkpoints evaluated per stage")
    args = parser.parse_args()
    model_overrides, attention, pointer = (_json_object(parser, flag, text) for flag, text in
                                           (("--model-json", args.model_json), ("--attention", args.attention),
                                            ("--pointer", args.pointer)))  # fmt: skip
    try:  # a bad --pointer is a usage error now, not a traceback after the data and the locate stage
        from benchmarks.toy.grounding import PointerConfig
        from focuskit.core.errors import ConfigError

        PointerConfig(**(pointer or {}))
    except (TypeError, ConfigError) as e:
        parser.error(f"--pointer: {e}")
    if args.plot:
        print(plot_experiments(args.workdir, args.plot))
        return

    from benchmarks.toy.metrics import evaluate_fast
    from benchmarks.toy.pool import VISIBLE_GROUPS, render_pool, sample_episodes, write_pool_episodes
    from benchmarks.toy.presets import SMALL
    from benchmarks.toy.recipe import Stage, build_base, precompute_features, sft_stage
    from focuskit.core.io import atomic_write_json
    from focuskit.data.synth import SynthConfig
    from focuskit.models.vlms.cnn_qwen2_vl import load_features

    t0 = time.perf_counter()
    s = args.image_size
    model = {**SMALL, "num_layers": args.layers, "hidden_size": args.hidden, "intermediate_size": 2 * args.hidden,
             "min_pixels": s * s, "max_pixels": s * s, "cnn_scale": args.cnn_scale,
             **(model_overrides or {})}  # fmt: skip
    groups = VISIBLE_GROUPS if args.groups == "visible" else None
    common: dict[str, Any] = {"image_size": s, "backgrounds": ("gradient",), "min_scale": 0.25, "max_scale": 0.45}
    if args.mutations:
        common["mutations"] = tuple(args.mutations)
    root = args.workdir / "data"
    pre = render_pool(SynthConfig(objects=1, seed=101, **common), root / "pre", 300, 5)
    train = render_pool(SynthConfig(objects=args.objects, seed=102, **common), root / "train", args.train_instances, 6,
                        alone=3, groups=groups, alone_scale=args.alone_scale)  # fmt: skip
    held = render_pool(SynthConfig(objects=args.objects, seed=103, **common), root / "eval", args.eval_instances, 5,
                       alone=4, groups=groups, alone_scale=args.alone_scale)  # fmt: skip
    # every object of every held-out instance as the target, same frames: position-balanced (see sample_episodes)
    heldout, clean_held, ek = [], [], args.eval_shots
    for role in range(args.objects):
        heldout += sample_episodes(held, args.eval_instances, shots=(ek, ek), seed=3, prefix=f"heldout{role}",
                                   distinct=True, role=role)  # fmt: skip
        clean_held += sample_episodes(held, args.eval_instances, shots=(ek, ek), seed=3, prefix=f"clean{role}",
                                      distinct=True, clean_rate=1.0, role=role)  # fmt: skip
    print(f"data {time.perf_counter() - t0:.0f}s", flush=True)
    feats = args.workdir / "features.pt"
    init = build_base(args.workdir / "init", model, seed=0)  # also when the features are reused: locate starts here
    if not feats.is_file():
        frames = [f.path for p in (pre, train, held) for inst in p for f in inst.frames]
        frames += [f.path for p in (train, held) for inst in p for a in inst.alone for f in a]
        print(precompute_features(init, frames, feats), flush=True)
    load_features(feats)

    def ev(model_dir: str) -> dict[str, Any]:
        full = evaluate_fast(model_dir, heldout, (ek,))
        clean = evaluate_fast(model_dir, clean_held, (ek,))
        return {"pick": full["pick_rate"][ek], "miou": full["miou"][ek], "area_ratio": full["area_ratio"][ek],
                "iou_any": full["iou_any"][ek], "clean_pick": clean["pick_rate"][ek], "clean_miou": clean["miou"][ek],
                "clean_iou_any": clean["iou_any"][ek], "picks": full["per_episode_pick"][ek],
                "ious": full["per_episode_iou"][ek]}  # fmt: skip

    if args.reeval:
        out = {}
        for m in args.reeval:
            out[m] = {k: v for k, v in ev(m).items() if k not in ("picks", "ious")}
            print(m, out[m], flush=True)
        (args.workdir / "reeval.json").write_text(json.dumps(out, indent=1))
        return
    record: dict[str, Any] = {"model": f"{args.layers}x{args.hidden}", "image_size": s, "cnn_scale": args.cnn_scale,
                              "objects": args.objects, "mutations": args.mutations, "eval_k": ek,
                              "alone_scale": args.alone_scale,
                              "train_shots": list(args.train_shots), "model_config": model,
                              "groups": args.groups, "train_instances": args.train_instances,
                              "eval_instances": args.eval_instances, "pointer": pointer, "batch": args.batch,
                              "schedule": args.schedule, "start_step": args.start_step,
                              "stages": [], "curve": []}  # fmt: skip
    if args.base is None:
        pre_eps = sample_episodes(pre, args.locate_steps * 8, shots=(1, 4), seed=1)
        base = sft_stage(args.workdir / "init", Stage(str(write_pool_episodes(pre_eps, root / "pre.jsonl")),
                                                      args.locate_steps, 2e-3), args.workdir / "base")  # fmt: skip
        current = base["model"]
        record["locate"] = {
            "steps": args.locate_steps,
            "seconds": base["seconds"],
            "lm_loss": base["curves"]["lm_loss"],
        }
    else:
        current = str(args.base)
        record["locate"] = {"reused": current}
    r = ev(current)
    record["base"] = {k: v for k, v in r.items() if k not in ("picks", "ious")}
    print(f"base: {record['base']}", flush=True)
    done = args.start_step
    for i, text in enumerate(args.stages):
        kind, frac, steps = parse_stage(text)
        eps = sample_episodes(train, steps * args.batch, shots=tuple(args.train_shots), seed=10 + i + args.start_step,
                              swap_roles=True,
                              clean_rate=frac if kind in ("clean", "mix") else 0.0,
                              copy_rate=frac if kind == "copy" else 0.0)  # fmt: skip
        data = write_pool_episodes(eps, root / f"stage{i}.jsonl")
        every = max(1, steps // max(1, args.curve))
        extra: dict[str, Any] = {"lr_scheduler_type": args.schedule}
        if args.curve:
            extra |= {"save_strategy": "steps", "save_steps": every, "save_total_limit": None}
        out = args.workdir / f"stage{i}"
        stage = Stage(str(data), steps, args.lr, args.batch, attention=attention, extra=extra,
                      pointer=(pointer or {}) if text.endswith("+p") else None)  # fmt: skip
        res = sft_stage(current, stage, out)
        for ckpt in sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            step = int(ckpt.name.split("-")[1])
            if step == steps:
                continue
            c = ev(str(ckpt))
            record["curve"].append(
                {"step": done + step, "pick": c["pick"], "miou": c["miou"], "clean_pick": c["clean_pick"]}
            )
            print(
                f"  step {done + step}: pick {c['pick']:.3f} clean {c['clean_pick']:.3f} mIoU {c['miou']:.3f} "
                f"clean IoU-any {c['clean_iou_any']:.3f}",
                flush=True,
            )
        current = res["model"]
        done += steps
        r = ev(current)
        record["curve"].append({"step": done, "pick": r["pick"], "miou": r["miou"], "clean_pick": r["clean_pick"]})
        summary = {k: v for k, v in r.items() if k not in ("picks", "ious")}
        record["stages"].append({"stage": text, "seconds": res["seconds"], "curves": res["curves"],
                                 "final_model": current, **summary})  # fmt: skip
        print(f"stage {text}: {summary} ({res['seconds']:.0f}s)", flush=True)
    n = len(r["picks"])
    record["final"] = {**{k: v for k, v in r.items() if k not in ("picks", "ious")},
                       "pick_se": (r["pick"] * (1 - r["pick"]) / n) ** 0.5, "n": n}  # fmt: skip
    record["per_episode"] = {"picks": r["picks"], "ious": r["ious"]}
    record["seconds"] = time.perf_counter() - t0
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    data["runs"][args.name] = record
    atomic_write_json(RESULTS, data, indent=1)
    print(f"final {args.name}: {record['final']} in {record['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
