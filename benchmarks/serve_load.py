"""Load test of `focuskit serve` on loopback: 50 concurrent mixed requests, latency percentiles and errors.

Bounded and local by construction: it starts its own server process on a free 127.0.0.1 port over a temporary
library of the shipped real photos, waits for the index, fires N requests at once (httpx async), stops the server
and exits; a global deadline ends everything. The mix covers every kind of work the page does: health, concept
list, library search, thumbnails, full-size images, detection and localization on uploaded photos, and concept
creation (writes to the memory, which the server serializes).

Run: `.venv/bin/python benchmarks/serve_load.py [--requests 50]`; writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from focuskit.core.io import atomic_write_json
from focuskit.library.demo import ASSET_DIR

HOST = "127.0.0.1"  # loopback only, never configurable
PHOTOS = sorted(p.name for p in ASSET_DIR.glob("*.jpg"))[:24]
BOX = [296.0, 14.0, 597.0, 242.0]  # the box in box_f0000.jpg
KINDS = ("health", "concepts", "search", "thumbnail", "image", "detect", "localize", "create")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _photo(name: str) -> tuple[str, bytes, str]:
    return (name, (ASSET_DIR / name).read_bytes(), "image/jpeg")


async def _one(client: httpx.AsyncClient, kind: str, i: int) -> tuple[str, float, int | str]:
    t = time.perf_counter()
    try:
        if kind == "health":
            r = await client.get("/health")
        elif kind == "concepts":
            r = await client.get("/concepts")
        elif kind == "search":
            r = await client.get("/library/search", params={"concept": "my box"})
        elif kind == "thumbnail":
            r = await client.get(f"/library/thumbnail/{PHOTOS[i % len(PHOTOS)]}")
        elif kind == "image":
            r = await client.get(f"/library/image/{PHOTOS[i % len(PHOTOS)]}")
        elif kind == "detect":
            r = await client.post("/detect", files=[("image", _photo(PHOTOS[i % len(PHOTOS)]))])
        elif kind == "localize":
            files = [("query", _photo(PHOTOS[i % len(PHOTOS)]))]
            r = await client.post("/localize", data={"concept": "my box"}, files=files)
        else:
            data = {"name": f"load concept {i}", "boxes": json.dumps([BOX])}
            r = await client.post("/concepts", data=data, files=[("images", _photo("box_f0000.jpg"))])
        status: int | str = r.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return kind, time.perf_counter() - t, status


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def _load(url: str, n: int, timeout: float) -> list[tuple[str, float, int | str]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        return await asyncio.gather(*(_one(client, KINDS[i % len(KINDS)], i) for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds before everything is stopped")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_load.json")
    args = parser.parse_args()
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="focuskit-serve-load-"))
    lib = work / "library"
    lib.mkdir()
    for name in PHOTOS:
        shutil.copy(ASSET_DIR / name, lib / name)
    port = _free_port()
    url = f"http://{HOST}:{port}"
    log = (work / "server.log").open("w")
    # Seed the memory with the demo concept before serving (the server is started on it).
    seed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from focuskit.memory.store import ConceptMemory; from focuskit.library.demo import "
            f"seed_demo_memory; seed_demo_memory(ConceptMemory({str(work / 'memory')!r}))",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if seed.returncode != 0:
        raise SystemExit(f"could not seed the memory: {seed.stderr}")
    cmd = [
        sys.executable,
        "-m",
        "focuskit.cli.main",
        "serve",
        "--memory",
        str(work / "memory"),
        "--library",
        str(lib),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FOCUSKIT_TOKEN": ""})
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {(work / 'server.log').read_text()}")
            if time.monotonic() - start > args.deadline:
                raise SystemExit("deadline reached before the server was ready")
            try:
                state = httpx.get(f"{url}/library/status", timeout=2).json()["indexing"]["state"]
                if state in ("done", "failed"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        remaining = max(10.0, args.deadline - (time.monotonic() - start))
        t0 = time.perf_counter()
        results = asyncio.run(asyncio.wait_for(_load(url, args.requests, remaining), remaining))
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        server_log = (work / "server.log").read_text(errors="replace")
        shutil.rmtree(work, ignore_errors=True)

    latencies = [lat for _, lat, _ in results]
    errors = [(k, s) for k, _, s in results if not (isinstance(s, int) and 200 <= s < 300)]
    per_kind = {}
    for kind in KINDS:
        lat = [x for k, x, _ in results if k == kind]
        if lat:
            per_kind[kind] = {"n": len(lat), "median_s": round(statistics.median(lat), 3), "max_s": round(max(lat), 3)}
    out = {
        "requests": len(results),
        "concurrency": args.requests,
        "wall_s": round(wall, 2),
        "errors": len(errors),
        "error_detail": errors,
        "latency_s": {
            "p50": _pct(latencies, 0.5),
            "p90": _pct(latencies, 0.9),
            "p99": _pct(latencies, 0.99),
            "max": round(max(latencies), 3),
        },
        "per_kind": per_kind,
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if errors:
        print("server log (last 60 lines):\n" + "\n".join(server_log.splitlines()[-60:]))
    print(f"{out['requests']} concurrent requests in {out['wall_s']} s, errors: {out['errors']}")
    print("latency p50 {p50}s p90 {p90}s p99 {p99}s max {max}s".format(**out["latency_s"]))
    for kind, row in per_kind.items():
        print(f"  {kind:10s} n={row['n']:2d} median {row['median_s']}s max {row['max_s']}s")
    atomic_write_json(args.out, out)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
