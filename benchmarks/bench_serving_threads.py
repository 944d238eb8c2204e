"""Benchmark: the service's torch threads (``ZSSBIR_TORCH_THREADS``) against /search latency and encode throughput.

On a small machine the server's torch threads compete with its own request work (decoding, ink normalisation,
BentoML) and with the load generator; this measures what each setting gives. For each setting, alternating
``--rounds`` times, a fresh ``bentoml serve`` of the project's bundle: /search p50/p99 from 1 then 8 closed-loop
clients (``--requests`` each phase), then POST /encode_sketch images/s from 32 clients of 1 image for ``--duration``
s. Timings are reported, never asserted. Writes benchmarks/results/serving_threads.{json,md}.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from sbir.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_serving as serving  # noqa: E402  (the same load generator and bodies)
from serving_support import bentoml_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def measure(threads: int, searches: list, encodes: list, requests: int, duration: float) -> dict:
    log = Path(tempfile.gettempdir()) / "zssbir_bench_threads.log"
    with bentoml_server("serving.service:SketchSearch", ROOT / ".bentoml", log,
                        env={"ZSSBIR_TORCH_THREADS": str(threads)}) as (url, _):
        search = f"{url}/search"
        asyncio.run(serving.run_clients([(search, searches, 1)], 0.1, per_client=40))  # warm-up
        out: dict = {"torch_threads": threads}
        for clients in (1, 8):
            tally = asyncio.run(serving.run_clients([(search, searches, clients)], 0.1,
                                                    per_client=requests // clients))[search]
            out[f"search_{clients}"] = {"p50_ms": tally.p(50), "p99_ms": tally.p(99), "errors": tally.errors}
        encode = f"{url}/encode_sketch"
        asyncio.run(serving.run_clients([(encode, encodes, 32)], 0.1, 3))
        tally = asyncio.run(serving.run_clients([(encode, encodes, 32)], 0.1, duration))[encode]
        out["encode_images_per_s"] = tally.items / duration
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1, max(1, (os.cpu_count() or 1) // 2)])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pngs = [path.read_bytes() for path in sorted(serving.SKETCHES.rglob("*.png"))[::4][:512]]
    searches = [serving.multipart([("sketch", data)], {"k": "12"}) for data in pngs]
    encodes = serving.encode_bodies(pngs, 1)
    runs = [measure(threads, searches, encodes, args.requests, args.duration)
            for _ in range(args.rounds) for threads in args.threads]
    for run in runs:
        print(run, flush=True)
    result = {"benchmark": "serving_threads", "cores": os.cpu_count(), "config": {k: str(v) if isinstance(v, Path)
              and not v.is_relative_to(ROOT) else (str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
              for k, v in vars(args).items()}, "runs": runs}
    atomic_write_json(args.out / "serving_threads.json", result)
    atomic_write_text(args.out / "serving_threads.md", markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = ["# The service's torch threads: /search latency and encode throughput", "",
             f"`python benchmarks/bench_serving_threads.py`, {r['cores']} cores, settings alternated "
             f"{r['config']['rounds']} times, a fresh server each run; server and load generator share the cores.", "",
             "| torch threads | /search 1 client p50 / p99 ms | /search 8 clients p50 / p99 ms | p99 8 / 1 | "
             "/encode_sketch img/s (32 clients x 1) |", "|---:|---:|---:|---:|---:|"]
    for run in r["runs"]:
        one, eight = run["search_1"], run["search_8"]
        lines.append(f"| {run['torch_threads']} | {one['p50_ms']:.1f} / {one['p99_ms']:.1f} | {eight['p50_ms']:.1f} / "
                     f"{eight['p99_ms']:.1f} | {eight['p99_ms'] / one['p99_ms']:.2f} | {run['encode_images_per_s']:.0f} |")
    for threads in sorted({run["torch_threads"] for run in r["runs"]}):
        mine = [run for run in r["runs"] if run["torch_threads"] == threads]
        lines.append(f"| mean of {threads} | {np.mean([m['search_1']['p50_ms'] for m in mine]):.1f} / "
                     f"{np.mean([m['search_1']['p99_ms'] for m in mine]):.1f} | "
                     f"{np.mean([m['search_8']['p50_ms'] for m in mine]):.1f} / "
                     f"{np.mean([m['search_8']['p99_ms'] for m in mine]):.1f} | | "
                     f"{np.mean([m['encode_images_per_s'] for m in mine]):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
