"""Cold start of the `focuskit` command, before vs after, measured side by side in one run.

Each command runs in a fresh Python process (what a user pays per call), for two source trees given by path: the
"before" tree (e.g. `git archive <base commit>` unpacked in a temporary folder) and this one. Runs alternate
between the trees so both see the same machine load. Reported per command and tree: the median and the best wall
time, and the median CPU time (user + system of the child), which a loaded machine inflates much less than wall time.

Commands: `focuskit --help`; an argument error (`detect --tau abc IMG`, exit 2); `detect IMG -m MEMORY` (a real
photo against a one-concept memory made once, with the after tree); the same with `FOCUSKIT_ENCODER_BACKEND=torch`
(the torch reference encoder; a tree without the ONNX runtime ignores the variable); `ask IMG "" -m MEMORY` (an
empty question, which the after tree refuses before loading a model).

The encoder's ONNX export lives in a private cache (`FOCUSKIT_CACHE_DIR`, a temporary folder): the first `detect`
of each tree, before the timed runs, fills it, and its wall time is reported as `first_detect_s` (the one-off
export, what a user pays once per weights file).

    git archive <base> | tar -x -C /tmp/focuskit-before
    python benchmarks/cli_cold_start.py --before /tmp/focuskit-before --runs 5
    # writes benchmarks/results/cli_cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
REAL = HERE / "focuskit" / "assets" / "realphotos"
RESULTS = HERE / "benchmarks" / "results" / "cli_cold_start.json"


def run_once(tree: Path, args: list[str], extra_env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit code) of `python -m focuskit.cli.main ARGS` with `tree` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "focuskit.cli.main", *args], env=env, cwd=tree, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree before the change")
    parser.add_argument("--after", type=Path, default=HERE, help="source tree after the change (default: this one)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    image = str(REAL / "cup_f0035.jpg")
    with tempfile.TemporaryDirectory(prefix="focuskit-cold-") as tmp:
        memory = str(Path(tmp) / "memory")
        os.environ["FOCUSKIT_CACHE_DIR"] = str(Path(tmp) / "cache")  # children inherit it
        os.environ.pop("FOCUSKIT_ENCODER_BACKEND", None)
        made = subprocess.run(
            [sys.executable, "-m", "focuskit.cli.main", "concept", "add", "cup", str(REAL / "cup_f0010.jpg"),
             "--box", "308,122,413,381", "-m", memory],
            env={**os.environ, "PYTHONPATH": str(opts.after)}, capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode != 0:
            raise SystemExit(f"could not make the memory: {made.stderr[-500:]}")
        torch_env = {"FOCUSKIT_ENCODER_BACKEND": "torch"}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "--help": (["--help"], {}),
            "argument error (detect --tau abc)": (["detect", image, "-m", memory, "--tau", "abc"], {}),
            "detect IMG -m MEM": (["detect", image, "-m", memory], {}),
            "detect IMG -m MEM (torch encoder)": (["detect", image, "-m", memory], torch_env),
            "ask IMG '' (empty question)": (["ask", image, "", "-m", memory, "--backend", "hf", "--model", "tiny"], {}),
        }
        trees = {"before": opts.before.resolve(), "after": opts.after.resolve()}
        first = {t: round(run_once(tree, ["detect", image, "-m", memory])[0], 3) for t, tree in trees.items()}
        samples: dict[str, dict[str, list[tuple[float, float, int]]]] = {c: {t: [] for t in trees} for c in commands}
        load = [os.getloadavg()[0]]
        for _ in range(opts.runs):
            for name, (args, extra) in commands.items():
                for tree_name, tree in trees.items():  # alternate: both trees see the same load
                    samples[name][tree_name].append(run_once(tree, args, extra))
            load.append(os.getloadavg()[0])
    rows = {}
    for name, per_tree in samples.items():
        rows[name] = {}
        for tree_name, runs in per_tree.items():
            walls, cpus, codes = zip(*runs, strict=True)
            rows[name][tree_name] = {
                "wall_median_s": round(statistics.median(walls), 3), "wall_best_s": round(min(walls), 3),
                "cpu_median_s": round(statistics.median(cpus), 3), "exit_codes": sorted(set(codes)),
            }  # fmt: skip
    record = {
        "runs": opts.runs, "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_1min": [round(v, 2) for v in load], "before": str(opts.before), "after": str(opts.after),
        "first_detect_s": first, "results": rows,
    }  # fmt: skip
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = opts.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(record, indent=2) + "\n")
    tmp_out.replace(opts.out)
    print(f"{'command':42s} {'before wall/best/cpu':>24s} {'after wall/best/cpu':>24s}")
    for name, r in rows.items():
        b, a = r["before"], r["after"]
        fmt = "{wall_median_s:6.2f} {wall_best_s:6.2f} {cpu_median_s:6.2f}"
        print(f"{name:42s} {fmt.format(**b):>24s} {fmt.format(**a):>24s}")
    print(f"first detect of each tree (fills the ONNX cache where there is one): {first}")
    print(f"load average during the run: {record['load_average_1min']}; written {opts.out}")


if __name__ == "__main__":
    main()
