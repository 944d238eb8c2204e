"""Stage ``restyle@<dataset>``: the dataset's unseen-category sketches redrawn in other styles, for the
style-shift report of ``evaluate`` (how retrieval holds up on thin pencil, marker, faint scans, tiny bitmaps,
off-centre drawings; ``sbir.datasets.styles``).

Params: ``restyle`` (the styles) and ``prepare.<dataset>`` (the seeds the sketches were drawn with). Output:
``data/styles/<dataset>/``: ``<style>/...png`` and ``styles.parquet`` (the manifest columns plus ``style``).
A dataset without vector line art gets an empty table saying why, and the report is skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sbir import paths
from sbir.config import ConfigError, build, load_params, section
from sbir.datasets import DatasetError, create
from sbir.datasets.styles import STYLES
from sbir.env import apply_offline_defaults
from sbir.io import atomic_write, atomic_write_json
from sbir.logs import setup_logging
from sbir.manifest import COLUMNS, ManifestError, read_manifest

STYLES_FILE = "styles.parquet"
log = logging.getLogger("stages.restyle")


@dataclass
class RestyleParams:
    """``params.yaml`` section ``restyle``."""

    styles: list[str] = field(default_factory=lambda: ["thin_grey", "thick_marker", "faint_scan", "tiny_bitmap",
                                                       "off_centre_partial"])

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


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params", default=str(paths.PARAMS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        restyle = build(RestyleParams, section(params, "restyle", source=args.params), f"{args.params}: restyle")
        frame = restyle_dataset(args.dataset, restyle, section(params, "prepare", args.dataset, source=args.params),
                                paths.styles_dir(args.dataset), progress=not args.no_progress)
    except (ConfigError, DatasetError, ManifestError, KeyError, OSError) as error:
        print(f"restyle failed: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset": args.dataset, "sketches": len(frame),
                      "styles": sorted(frame["style"].unique().tolist())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
