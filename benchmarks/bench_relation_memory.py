"""Benchmark: ZSE-SBIR's RN mode (every sketch against every photo, ``models.pair_ranking.score_every_pair``) keeps
its memory flat in the gallery's size.

The compact ZSE-SBIR of params.yaml (random heads; the memory does not depend on the weights) scores ``--sketches``
sketches against galleries of growing size, each in a fresh process, whose peak resident memory (ru_maxrss) is
reported beside the smallest gallery's (the baseline of the same run) and beside what holding every photo's tokens
would take. The token cache is capped at ``--cache-mb`` so that the cap is reached inside the measured range.
Writes benchmarks/results/relation_memory.{json,md}. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from sbir.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def write_images(folder: Path, sketches: int, photos: int, size: int = 64) -> pd.DataFrame:
    """Random strokes as sketches, random colour blocks as photos, and their manifest rows."""
    rng = np.random.default_rng(0)
    rows = []
    for domain, count in (("sketch", sketches), ("photo", photos)):
        for i in range(count):
            image = Image.new("RGB", (size, size), "white")
            draw = ImageDraw.Draw(image)
            for _ in range(4):
                box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
                fill = None if domain == "sketch" else tuple(int(v) for v in rng.integers(0, 255, 3))
                draw.rectangle((box[0][0], box[1][0], box[0][1], box[1][1]), outline="black", fill=fill)
            path = f"{domain}/{i:05d}.png"
            (folder / domain).mkdir(exist_ok=True)
            image.save(folder / path)
            rows.append({"path": path, "domain": domain, "category": f"c{i % 10}", "split": "test_unseen"})
    return pd.DataFrame(rows)


def child(folder: Path, sketches: int, photos: int, cache_mb: int, block: int) -> None:
    """One measurement in this process: prints a JSON line."""
    import torch

    from models.pair_ranking import score_every_pair
    from models.zse import ZSE, ZSEConfig
    from sbir.config import Params
    from sbir.manifest import Manifest

    torch.set_num_threads(2)
    method = ZSE(Params.load(ROOT / "params.yaml").read(ZSEConfig, "zse.model"))
    model = method.export(method.build(10).eval())
    model.cache_bytes = cache_mb * 2**20
    frame = pd.read_csv(folder / "rows.csv")
    manifest = Manifest(frame, "bench", folder)
    sketch_rows = frame[frame["domain"] == "sketch"].head(sketches).reset_index(drop=True)
    photo_rows = frame[frame["domain"] == "photo"].head(photos).reset_index(drop=True)
    started = time.perf_counter()
    scores = score_every_pair(model, manifest, sketch_rows, photo_rows, block=block).rows(np.arange(len(sketch_rows)))
    seconds = time.perf_counter() - started
    net = model.net
    token_bytes = (1 + net.grid[0] * net.grid[1]) * net.width * 4
    print(json.dumps({"photos": photos, "sketches": sketches, "pairs": int(scores.size), "seconds": seconds,
                      "pairs_per_s": scores.size / seconds, "peak_rss_mb": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024, "all_photo_tokens_mb": photos * token_bytes / 2**20}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sketches", type=int, default=16)
    parser.add_argument("--galleries", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--cache-mb", type=int, default=16)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--child", nargs=2, type=int, metavar=("SKETCHES", "PHOTOS"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.folder, *args.child, args.cache_mb, args.block)
        return 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_images(folder, args.sketches, max(args.galleries)).to_csv(folder / "rows.csv", index=False)
        for photos in args.galleries:
            out = subprocess.run([sys.executable, __file__, "--child", str(args.sketches), str(photos), "--folder",
                                  str(folder), "--cache-mb", str(args.cache_mb), "--block", str(args.block)],
                                 check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    base = runs[0]["peak_rss_mb"]
    for run in runs:
        run["peak_vs_smallest"] = run["peak_rss_mb"] / base
    result = {"sketches": args.sketches, "cache_mb": args.cache_mb, "block": args.block, "runs": runs,
              "machine": f"{os.cpu_count()} CPU cores, torch threads 2"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "relation_memory.json", result)
    lines = ["# ZSE-SBIR RN mode: peak memory against the gallery's size", "",
             f"Written by `python benchmarks/bench_relation_memory.py` ({result['machine']}): the compact ZSE-SBIR "
             f"of params.yaml scores {args.sketches} sketches against every photo of the gallery "
             f"(`models.pair_ranking.score_every_pair`, blocks of {args.block}, token cache capped at "
             f"{args.cache_mb} MB), each gallery in a fresh process. Peak = the process's maximum resident memory "
             "(Python, torch and the model included); the baseline is the smallest gallery of the same run.", "",
             "| photos | pairs | peak RSS (MB) | × smallest gallery | every photo's tokens held (MB) | pairs/s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        lines.append(f"| {run['photos']} | {run['pairs']} | {run['peak_rss_mb']:.0f} | {run['peak_vs_smallest']:.2f} "
                     f"| {run['all_photo_tokens_mb']:.1f} | {run['pairs_per_s']:.0f} |")
    atomic_write_text(RESULTS / "relation_memory.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
