"""Benchmark: preparing the embedded OpenMoji-ZS dataset (target: ≤ 120 s on 2 cores).

Baseline measured in the same run: the same build with one worker process. Prints wall times, the parallel
speed-up and the ratio to the 120 s budget; writes benchmarks/results/prepare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sbir.config import Params
from sbir.datasets import create, summarize

BUDGET_SECONDS = 120.0
RESULTS = Path(__file__).parent / "results"


def time_prepare(params: Params, workers: int, max_items: int | None) -> tuple[float, dict]:
    """Prepare OpenMoji-ZS as params.yaml's ``prepare.openmoji_zs`` does, with ``workers`` and ``max_items``."""
    values = {**params.section("prepare.openmoji_zs"), "workers": workers, "max_items_per_category": max_items}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = create("openmoji_zs", **values).prepare(Path(tmp) / "openmoji_zs", progress=False)
        return time.perf_counter() - started, summarize(manifest.frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 emoji per category instead of all")
    args = parser.parse_args()
    max_items = 3 if args.quick else None
    params = Params.load()
    baseline, _ = time_prepare(params, 1, max_items)
    default, counts = time_prepare(params, 2, max_items)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "images": counts["images"], "quick": args.quick,
        "seconds_1_worker": round(baseline, 2), "seconds_2_workers": round(default, 2),
        "speedup_vs_1_worker": round(baseline / default, 2),
        "ratio_to_budget": round(default / BUDGET_SECONDS, 3), "budget_seconds": BUDGET_SECONDS,
        "counts": counts,
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "prepare.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "prepare.md").write_text(
            "# Prepare OpenMoji-ZS\n\n"
            f"{counts['images']} images ({counts['instances']} emoji, {counts['categories']} categories) on "
            f"{os.cpu_count()} cores.\n\n| build | seconds | vs budget (120 s) |\n|---|---|---|\n"
            f"| 1 worker (baseline) | {baseline:.1f} | {baseline / BUDGET_SECONDS:.2f} |\n"
            f"| 2 workers (default) | {default:.1f} | {default / BUDGET_SECONDS:.2f} |\n\n"
            f"Speed-up of the default over the baseline: {baseline / default:.2f}×.\n")


if __name__ == "__main__":
    main()
