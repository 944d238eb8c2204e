"""Stage ``prepare``: build one dataset's manifest (and images) under ``data/prepared/<dataset>/``.

Params: ``prepare.<dataset>`` (the dataset's constructor arguments, see ``sbir.datasets``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sbir import paths
from sbir.config import Params
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
    started = time.perf_counter()
    manifest = prepare_dataset(args.dataset, params.section(f"prepare.{args.dataset}"),
                               args.out or paths.prepared_dir(args.dataset), progress=not args.no_progress)
    return {"dataset": args.dataset, "seconds": round(time.perf_counter() - started, 1), **summarize(manifest.frame)}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="registered dataset name, e.g. openmoji_zs")
    parser.add_argument("--out", type=Path, default=None, help="default: data/prepared/<dataset>")
    return run_stage("prepare", parser, run_prepare, argv)


if __name__ == "__main__":
    sys.exit(main())
