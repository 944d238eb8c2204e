"""Stage ``prepare``: build a dataset's manifest (and images) under ``data/prepared/<dataset>/``.

Params: ``prepare.<dataset>`` (the dataset's constructor arguments, see ``sbir.datasets``). ``--dataset`` may be
given several times (``prepare_artwork`` builds every artwork set in one process, in the order given).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sbir import paths
from sbir.config import ConfigError, Params
from sbir.datasets import create, summarize
from sbir.manifest import Manifest
from sbir.stage import run_stage, stage_parser


def prepare_dataset(name: str, params: dict, out_dir: Path, progress: bool = True) -> Manifest:
    """Build the dataset into a fresh ``out_dir`` (a stale one is removed first)."""
    dataset = create(name, **params)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    return dataset.prepare(out_dir, progress=progress)


def run_prepare(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    if args.out and len(args.dataset) > 1:
        raise ConfigError("--out names one folder: give one --dataset with it")
    summaries = []
    for name in args.dataset:
        started = time.perf_counter()
        manifest = prepare_dataset(name, params.section(f"prepare.{name}"), args.out or paths.prepared_dir(name),
                                   progress=not args.no_progress)
        summaries.append({"dataset": name, "seconds": round(time.perf_counter() - started, 1),
                          **summarize(manifest.frame)})
    if len(summaries) == 1:
        return summaries[0]
    return {"datasets": len(summaries), **{item["dataset"]: f"{item['images']} images in {item['seconds']} s"
                                           for item in summaries}}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, action="append",
                        help="registered dataset name, e.g. openmoji_zs (repeat for several)")
    parser.add_argument("--out", type=Path, default=None, help="default: data/prepared/<dataset>")
    return run_stage("prepare", parser, run_prepare, argv)


if __name__ == "__main__":
    sys.exit(main())
