"""Stage ``embed@<model>``: one model's embeddings of a prepared dataset's test rows, with their manifest row ids.

Loads the model folder ``artifacts/checkpoints/<model>/`` (any method or baseline) and embeds every sketch and
photo of ``test_unseen`` and ``test_seen`` through the model interface (``models.embed``: images decoded in
DataLoader workers), and the unseen sketches redrawn in other styles (``restyle@<dataset>``) where the dataset
has them; then the photos of each photo-only gallery of ``evaluate.cross_galleries`` built for that dataset
(e.g. ``twemoji`` for ``openmoji_zs``), into ``galleries/<gallery>/`` of the same folder (cross-dataset
evaluation). Params: ``embed`` (runtime only: batch size and workers do not change the vectors) and
``evaluate.cross_galleries`` (read through ``sbir.embeddings``); the dataset comes from the command line
(``dvc.yaml`` passes ``evaluate.dataset``).
Output: ``artifacts/embeddings/<dataset>/<model>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from models.backbones import BackboneError
from models.checkpoint import CheckpointError, load_model, model_folder
from models.embed import embed_dataset, embed_galleries
from sbir import paths
from sbir.config import ConfigError, build, load_params, section
from sbir.embeddings import applicable_galleries, cross_gallery_names
from sbir.env import apply_offline_defaults
from sbir.logs import setup_logging
from sbir.manifest import ManifestError, read_manifest
from stages.restyle import read_styles


@dataclass
class EmbedParams:
    """``params.yaml`` section ``embed``."""

    batch_size: int = 64
    workers: int = 2
    prefetch: int = 2


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model name (artifacts/checkpoints/<name>) or a folder")
    parser.add_argument("--dataset", required=True, help="a prepared dataset (data/prepared/<dataset>)")
    parser.add_argument("--params", default=str(paths.PARAMS))
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/embeddings/<dataset>/<model>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        raw = load_params(args.params)
        params = build(EmbedParams, section(raw, "embed", source=args.params), f"{args.params}: embed")
        cross_galleries = cross_gallery_names(raw, args.params)
        folder = model_folder(args.model)
        model = load_model(folder)
        manifest = read_manifest(paths.prepared_dir(args.dataset))
        galleries = applicable_galleries(args.dataset, cross_galleries)
        out_dir = args.out or paths.embeddings_dir(args.dataset, folder.name)
        summary = embed_dataset(model, manifest, out_dir, params, progress=not args.no_progress,
                                styles=read_styles(args.dataset), styles_root=paths.styles_dir(args.dataset))
        summary["galleries"] = {name: done["count"] for name, done in
                                embed_galleries(model, galleries, out_dir, params, not args.no_progress).items()}
    except (ConfigError, CheckpointError, ManifestError, BackboneError, OSError, ValueError, KeyError) as error:
        print(f"embed failed: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("dataset", "count", "seconds", "galleries")} | {"model": folder.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
