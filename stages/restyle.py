"""Stage ``restyle@<dataset>``: the dataset's unseen-category sketches redrawn in other styles, for the
style-shift report of ``evaluate`` (how retrieval holds up on thin pencil, marker, faint scans, tiny bitmaps,
off-centre drawings; ``sbir.datasets.styles``).

Params: ``restyle`` (the styles) and ``prepare.<dataset>`` (the seeds the sketches were drawn with). Output:
``data/styles/<dataset>/``: ``<style>/...png`` and ``styles.parquet`` (the manifest columns plus ``style``).
A dataset without vector line art gets an empty table saying why, and the report is skipped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sbir import paths
from sbir.datasets import DatasetError, create
from sbir.datasets.styles import STYLES
from sbir.io import atomic_write, atomic_write_json
from sbir.manifest import COLUMNS, read_manifest
from typing import Any
from sbir.config import Params
from sbir.stage import run_stage, stage_parser

STYLES_FILE = "styles.parquet"
log = logging.getLogger("stages.restyle")


@dataclass
class RestyleParams:
    """``params.yaml`` section ``restyle``."""

    styles: list[str]  # names of sbir/datasets/styles.py

    def __post_init__(self) -> None:
        unknown = sorted(set(self.styles) - set(STYLES))
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; known: {sorted(STYLES)}")


def restyle_dataset(dataset: str, params: RestyleParams, dataset_params: dict, out_dir: Path,
                    progress: bool = True) -> pd.DataFrame:
    """Redraw the unseen sketches of a prepared dataset into a fresh ``out_dir``; returns the table."""
    manifest = read_manifest(paths.prepared_dir(dataset))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    try:
        frame = create(dataset, **dataset_params).restyle(manifest, out_dir, tuple(params.styles), progress=progress)
        reason = ""
    except DatasetError as error:
        frame, reason = pd.DataFrame(columns=[*COLUMNS, "style"]), str(error)
        log.warning("no style-shift report for %s: %s", dataset, reason)
    frame = frame.loc[:, [*COLUMNS, "style"]]
    atomic_write(out_dir / STYLES_FILE, lambda handle: frame.to_parquet(handle, index=False))
    atomic_write_json(out_dir / "styles.json", {"dataset": dataset, "styles": params.styles,
                                                "sketches": int(len(frame)), "unavailable": reason})
    return frame


def read_styles(dataset: str) -> pd.DataFrame | None:
    """The restyled sketches of a dataset (paths relative to its styles folder), or None if there are none."""
    path = paths.styles_dir(dataset) / STYLES_FILE
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return frame if len(frame) else None


def run_restyle(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    frame = restyle_dataset(args.dataset, params.read(RestyleParams, "restyle"),
                            params.section(f"prepare.{args.dataset}"), paths.styles_dir(args.dataset),
                            progress=not args.no_progress)
    return {"dataset": args.dataset, "sketches": len(frame), "styles": sorted(frame["style"].unique().tolist())}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    return run_stage("restyle", parser, run_restyle, argv)


if __name__ == "__main__":
    sys.exit(main())
