"""FOCUS you can watch work: a CNN-eyed tiny Qwen2-VL learns in-context instance matching, then the paper's ablation.

    .venv/bin/python benchmarks/toy_ablation.py --pretrain-only --save runs/base   # the base, once (hours on CPU)
    .venv/bin/python benchmarks/toy_ablation.py --base runs/base --quick   # base vs SFT, pick rate
    .venv/bin/python benchmarks/toy_ablation.py --base runs/base           # the ablation on that base
    .venv/bin/python benchmarks/toy_ablation.py --gpu        # one large NVIDIA GPU, bf16, bigger model (never in CI)
    .venv/bin/python benchmarks/toy_ablation.py --train-only --save runs/toy   # the best recipe's checkpoint
    focuskit eval --engine vlm --model runs/toy ...           # ... evaluated like any checkpoint

The model is a real Qwen2-VL (`focuskit.models.vlms.cnn_qwen2_vl`) whose vision tower is the frozen ImageNet
MobileNetV2 + a trainable projector and position embedding. Data: frame pools of synthetic instances with one
same-shape look-alike per frame (`benchmarks/toy/pool.py`). Stages: "locate" (one object per frame: the stand-in for
a pretrained VLM's grounding) -> "match" (pointer-supervised instance episodes: the stand-in for its retrieval; see
`benchmarks/toy/presets.py`) -> the rows: SFT on the instance task (optionally with the attention loss) -> GRPO. See
docs/toy_ablation.md for what was measured. Writes benchmarks/results/toy_ablation[_quick|_gpu].json, .md, .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.toy.presets import PRESETS, Preset
from focuskit.core.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"


def _fail(message: str) -> None:
    print(f"focuskit: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def real_photos(model: Path) -> dict[str, object]:
    """`focuskit eval` on the built-in real-photo episodes: the toy checkpoint (`--engine vlm`) and `matching`."""
    import subprocess

    from focuskit.data.realphotos import realphotos_episodes

    if not (model / "config.json").is_file():
        _fail(f"{model} is not a checkpoint directory (no config.json); make one with --train-only --save DIR")
    out: dict[str, object] = {"episodes": str(realphotos_episodes())}
    recipe = model / "toy_recipe.json"
    if recipe.is_file():  # what was trained, and its held-out synthetic figures, next to its real-photo ones
        out["recipe"] = json.loads(recipe.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for engine, extra in (("vlm", ["--model", str(model)]), ("matching", [])):
            path = Path(tmp) / f"{engine}.json"
            cli = [sys.executable, "-c", "from focuskit.cli.main import main; main()"]
            cmd = [*cli, "eval", "--episodes", str(realphotos_episodes()), "--engine", engine, "--shots", "1,2,4",
                   "--out", str(path), *extra]  # fmt: skip
            subprocess.run(cmd, check=True)
            data = json.loads(path.read_text())
            out[engine] = {k: v for k, v in data.items() if k != "predictions"}
    return out


DATA_FIELDS = ("image_size", "objects", "frames", "backgrounds", "min_scale", "max_scale", "groups", "alone",
               "mutations", "alone_scale", "model")  # fmt: skip
"""Preset fields a base must have been built with for the rows' data to be the distribution it knows (a preset may
draw fewer instances from the same generator: its pool is then the first ones of the base's)."""


def check_base(base: Path, preset: Preset) -> None:
    """`base` is a checkpoint of this family, and (when it records its recipe) was built on the preset's data."""
    if not (base / "config.json").is_file():
        _fail(f"--base {base} is not a checkpoint directory (no config.json); make one with --pretrain-only --save DIR")
    recipe = base / "toy_recipe.json"
    if not recipe.is_file():
        print(f"--base {base} records no recipe (toy_recipe.json): its data options cannot be checked", flush=True)
        return
    built = json.loads(recipe.read_text())["preset"]
    wanted = json.loads(json.dumps(dataclasses.asdict(preset)))  # tuples as lists, like the saved recipe
    differ = [f for f in DATA_FIELDS if built.get(f) != wanted.get(f)]
    if differ:
        _fail(f"--base {base} was built with other data options than preset {preset.name!r}: {', '.join(differ)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="<= 10 min on 2 cores: base and SFT rows, k=4")
    mode.add_argument("--smoke", action="store_true", help="seconds-scale check of every code path (numbers: noise)")
    mode.add_argument("--gpu", action="store_true", help="GPU preset (bf16, bigger model); needs CUDA")
    parser.add_argument("--train-only", action="store_true", help="train the best recipe (SFT row) and save it")
    parser.add_argument("--pretrain-only", action="store_true", help="train only the base (locate + match); save it")
    parser.add_argument("--save", type=Path, default=None, help="with --train-only / --pretrain-only: where it goes")
    parser.add_argument("--base", type=Path, default=None,
                        help="start the rows from this base (--pretrain-only's checkpoint), not a new one")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    parser.add_argument("--rows", nargs="+", default=None, help="override the preset's rows (e.g. sft sft_grpo)")
    parser.add_argument("--no-grid", action="store_true", help="skip the lambda x margin grid")
    parser.add_argument("--hard", action="store_true",
                        help="the default hard look-alikes (1-2 attributes differ), not the easy ones")  # fmt: skip
    parser.add_argument("--perf", action="store_true", help="only measure attention-loss overhead and cache speedup")
    parser.add_argument(
        "--real-photos",
        type=Path,
        default=None,
        metavar="DIR",
        help="only evaluate checkpoint DIR and the matching engine on the built-in real photos",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and models here (default: temporary)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.perf:
        from benchmarks.toy.perf import measure

        with tempfile.TemporaryDirectory(prefix="toy_perf_") as tmp:
            perf = measure(Path(tmp))
        print(json.dumps(perf, indent=1))
        atomic_write_json(args.out / "toy_perf.json", perf)
        return
    if args.real_photos is not None:
        atomic_write_json(args.out / "toy_realphotos.json", real_photos(args.real_photos))
        return
    preset = PRESETS["quick" if args.quick else "gpu" if args.gpu else "smoke" if args.smoke else "full"]
    if args.hard:  # SynthConfig's default mutations; a --base must have been built (or continued) on them
        preset = dataclasses.replace(preset, mutations=None)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            _fail("--gpu needs a CUDA GPU and none is available; use --quick or the default CPU run")
    if args.train_only and args.pretrain_only:
        _fail("--train-only and --pretrain-only exclude each other")
    only = "--train-only" if args.train_only else "--pretrain-only" if args.pretrain_only else None
    if only:
        if args.save is None:
            _fail(f"{only} needs --save DIR (where the trained checkpoint goes)")
        if args.save.exists() and any(args.save.iterdir()):
            _fail(f"--save {args.save} exists and is not empty; pick a new directory")
        preset = dataclasses.replace(preset, rows=("sft",), grid=(), seeds=preset.seeds[:1], curve_points=0)
    elif args.save is not None:
        _fail("--save only goes with --train-only or --pretrain-only")
    if args.base is not None:
        if args.pretrain_only:
            _fail("--base and --pretrain-only exclude each other (--pretrain-only builds a base)")
        check_base(args.base, preset)
    elif preset.match and not args.pretrain_only:
        steps = sum(m.steps for m in preset.match)
        print(f"no --base: training the base first ({preset.pre_steps} locate + {steps} match steps; hours on a CPU). "
              "Build it once with --pretrain-only --save DIR and pass --base DIR.", flush=True)  # fmt: skip
    if args.seeds:
        preset = dataclasses.replace(preset, seeds=tuple(args.seeds))
    if args.rows:
        preset = dataclasses.replace(preset, rows=tuple(args.rows))
    if args.no_grid:
        preset = dataclasses.replace(preset, grid=())
    if not args.train_only:
        args.out.mkdir(parents=True, exist_ok=True)

    from benchmarks.toy.ablation import run
    from benchmarks.toy.report import markdown, plot_curves

    with tempfile.TemporaryDirectory(prefix="toy_ablation_") as tmp:
        workdir = args.workdir or Path(tmp)
        result = run(preset, workdir, base_model=args.base, pretrain_only=args.pretrain_only,
                     progress=lambda s: print(s, flush=True))  # fmt: skip
        if args.pretrain_only:
            shutil.copytree(result["base"]["model"], args.save)
            recipe = {"preset": result["preset"], "pretrain": [{k: v for k, v in s.items() if k != "model"}
                                                               for s in result["pretrain"]]}  # fmt: skip
            atomic_write_json(args.save / "toy_recipe.json", recipe)
            print(f"saved the base to {args.save}; run the rows with --base {args.save}")
            return
        if args.train_only:
            row = next(r for r in result["rows"] if r["name"] == "sft")
            shutil.copytree(row["model"], args.save)
            recipe = {"preset": result["preset"], "heldout": {k: row[k] for k in ("miou", "pick_rate", "area_ratio")}}
            atomic_write_json(args.save / "toy_recipe.json", recipe)
            print(f"saved {args.save}: held-out pick {json.dumps(row['pick_rate'])}, mIoU {json.dumps(row['miou'])}")
            return
    name = "toy_ablation" + ("" if preset.name == "full" else f"_{preset.name}") + ("_hard" if args.hard else "")
    text = markdown(result)
    print("\n" + text)
    for r in result["rows"]:  # per-episode values stay in the JSON (paired differences), models do not
        r.pop("model", None)
    for stage in (result["base"], *result["pretrain"]):
        stage.pop("model", None)
    atomic_write_json(args.out / f"{name}.json", result)
    atomic_write_text(args.out / f"{name}.md", text)
    plot_curves(result, args.out / f"{name}.png")
    print(f"wrote {args.out / name}.json, .md and .png")


if __name__ == "__main__":
    main()
