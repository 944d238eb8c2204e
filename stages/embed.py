"""Stage ``embed@<model>``: one model's embeddings of a prepared dataset's test rows, with their manifest row ids.

Loads the model folder ``artifacts/checkpoints/<model>/`` (any method or baseline) and embeds every sketch and
photo of ``test_unseen`` and ``test_seen`` through the model interface (``models.embed``: images decoded in
DataLoader workers), and the unseen sketches redrawn in other styles (``restyle@<dataset>``) where the dataset
has them; then the test images of each artwork set built for that dataset that ``evaluate.cross_galleries``
(photo styles, e.g. ``twemoji``) or ``evaluate.cross_sketches`` (sketch styles, e.g. ``symbola``) lists, into
``galleries/<set>/`` of the same folder (cross-style evaluation). Params: ``embed`` (runtime only: batch size and
workers do not change the vectors), ``evaluate.cross_galleries`` and ``evaluate.cross_sketches``; the dataset comes from the command line
(``dvc.yaml`` passes ``evaluate.dataset``).
Output: ``artifacts/embeddings/<dataset>/<model>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from models.checkpoint import load_model, model_folder
from models.embed import EmbedParams, embed_dataset, embed_galleries
from sbir import paths
from sbir.config import Params
from sbir.embeddings import applicable_galleries
from sbir.manifest import read_manifest
from sbir.stage import run_stage, stage_parser
from stages.restyle import read_styles


def run_embed(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    settings = params.read(EmbedParams, "embed")
    folder = model_folder(args.model)
    model = load_model(folder)
    manifest = read_manifest(paths.prepared_dir(args.dataset))
    galleries = {**applicable_galleries(args.dataset, params.value("evaluate.cross_galleries", list[str])),
                 **applicable_galleries(args.dataset, params.value("evaluate.cross_sketches", list[str]),
                                        "evaluate.cross_sketches")}
    out_dir = args.out or paths.embeddings_dir(args.dataset, folder.name)
    summary = embed_dataset(model, manifest, out_dir, settings, progress=not args.no_progress,
                            styles=read_styles(args.dataset), styles_root=paths.styles_dir(args.dataset))
    summary["galleries"] = {name: done["count"] for name, done in
                            embed_galleries(model, galleries, out_dir, settings, not args.no_progress).items()}
    return {k: summary[k] for k in ("dataset", "count", "seconds", "galleries")} | {"model": folder.name}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="a model name (artifacts/checkpoints/<name>) or a folder")
    parser.add_argument("--dataset", required=True, help="a prepared dataset (data/prepared/<dataset>)")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/embeddings/<dataset>/<model>")
    return run_stage("embed", parser, run_embed, argv)


if __name__ == "__main__":
    sys.exit(main())
