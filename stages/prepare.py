"""Stage ``prepare``: build one dataset's manifest (and images) under ``data/prepared/<dataset>/``.

Params: ``prepare.<dataset>`` (the dataset's constructor arguments, see ``sbir.datasets``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from sbir import paths
from sbir.config import ConfigError, load_params, section
from sbir.datasets import DatasetError, create, summarize
from sbir.env import apply_offline_defaults
from sbir.logs import setup_logging
from sbir.manifest import Manifest


def prepare_dataset(name: str, params: dict, out_dir: Path, progress: bool = True) -> Manifest:
    """Build the dataset into a fresh ``out_dir`` (a stale one is removed first)."""
    dataset = create(name, **params)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    return dataset.prepare(out_dir, progress=progress)


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="registered dataset name, e.g. openmoji_zs")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=None, help="default: data/prepared/<dataset>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out_dir = args.out or paths.prepared_dir(args.dataset)
    started = time.perf_counter()
    try:
        params = section(load_params(args.params), "prepare", args.dataset, source=args.params)
        manifest = prepare_dataset(args.dataset, params, out_dir, progress=not args.no_progress)
    except (ConfigError, DatasetError, KeyError) as error:
        print(f"prepare failed: {error}", file=sys.stderr)
        return 2
    counts = summarize(manifest.frame)
    print(json.dumps({"dataset": args.dataset, "seconds": round(time.perf_counter() - started, 1), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
