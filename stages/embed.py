"""Stage ``embed@<model>``: one model's embeddings of a prepared dataset's test rows, with their manifest row ids.

Loads the model folder ``artifacts/checkpoints/<model>/`` (any method or baseline) and embeds every sketch and
photo of ``test_unseen`` and ``test_seen`` through the model interface (images decoded in DataLoader workers),
and the unseen sketches redrawn in other styles (``restyle@<dataset>``) where the dataset has them; then the
photos of each photo-only gallery of ``evaluate.cross_galleries`` built for that dataset (e.g. ``twemoji`` for
``openmoji_zs``), into ``galleries/<gallery>/`` of the same folder (cross-dataset evaluation).
Params: ``embed`` (runtime only: batch size and workers do not change the vectors) and
``evaluate.cross_galleries``; the dataset comes from the command line (``dvc.yaml`` passes ``evaluate.dataset``).
Output: ``artifacts/embeddings/<dataset>/<model>/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.checkpoint import load_model
from models.embed import embed_paths
from models.interface import RetrievalModel
from sbir import paths
from sbir.embeddings import META_FILE, Embeddings, manifest_rows, read_embeddings, write_embeddings
from sbir.manifest import Manifest, ManifestError, manifest_fingerprint, read_manifest
from stages.evaluate import EvaluateParams
from stages.restyle import read_styles
from sbir.config import Count, Params, PositiveInt
from sbir.stage import run_stage, stage_parser

EMBEDDED_SPLITS = ("test_unseen", "test_seen")
log = logging.getLogger("stages.embed")


@dataclass
class EmbedParams:
    """``params.yaml`` section ``embed``."""

    batch_size: PositiveInt
    workers: Count  # DataLoader processes (0: decode in the main process)
    prefetch: PositiveInt


def embed_dataset(model: RetrievalModel, manifest: Manifest, out_dir: Path, params: EmbedParams,
                  progress: bool = True, styles: pd.DataFrame | None = None,
                  styles_root: Path | None = None) -> dict[str, Any]:
    """Embed the test rows of ``manifest`` (and restyled sketches, paths under ``styles_root``), domain by
    domain, and write them with their row ids."""
    rows = manifest_rows(manifest, EMBEDDED_SPLITS)
    files = [manifest.resolve(p) for p in rows["path"]]
    if styles is not None and len(styles):
        restyled = styles.assign(row=-1).loc[:, list(rows.columns)]
        rows = pd.concat([rows, restyled], ignore_index=True)
        files += [Path(styles_root or ".") / p for p in restyled["path"]]
    vectors = np.zeros((len(rows), model.embedding_dim), dtype=np.float32)
    started = time.perf_counter()
    for domain in ("sketch", "photo"):
        mask = (rows["domain"] == domain).to_numpy()
        chosen = [f for f, keep in zip(files, mask) if keep]
        vectors[mask] = embed_paths(model, chosen, domain, params.batch_size, params.workers, params.prefetch,
                                    progress)
    seconds = time.perf_counter() - started
    meta = {"dataset": manifest.dataset, "model": model.describe(), "splits": list(EMBEDDED_SPLITS),
            "manifest_fingerprint": manifest_fingerprint(manifest)}
    write_embeddings(out_dir, vectors, rows, meta)
    log.info("embedded %d images with %s in %.1f s -> %s", len(rows), model.name, seconds, out_dir)
    return {**meta, "count": len(rows), "seconds": round(seconds, 1)}


def applicable_galleries(dataset: str, names: Sequence[str]) -> dict[str, Manifest]:
    """The prepared photo-only galleries among ``names`` that were built for ``dataset`` (others: logged, skipped)."""
    galleries = {}
    for name in names:
        try:
            gallery = read_manifest(paths.prepared_dir(name))
        except ManifestError as error:
            raise ManifestError(f"evaluate.cross_galleries lists '{name}': {error} (or drop it from the list)"
                                ) from error
        built_for = gallery.extra.get("gallery_for")
        if built_for == dataset:
            galleries[name] = gallery
        else:
            log.info("gallery %s was built for %s, not %s: skipped", name, built_for, dataset)
    return galleries


def embed_galleries(model: RetrievalModel, galleries: dict[str, Manifest], out_dir: Path, params: EmbedParams,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    """Embed each gallery's test photos into ``galleries/<name>/`` of a model's embeddings folder ``out_dir``."""
    return {name: embed_dataset(model, gallery, paths.gallery_embeddings_dir(out_dir, name), params, progress)
            for name, gallery in galleries.items()}


def stored_galleries(folder: Path, dataset: str, names: Sequence[str], out_dir: Path,
                     progress: bool = True) -> dict[str, Embeddings]:
    """The stored embeddings of each gallery of ``names`` built for ``dataset`` in a model's embeddings folder
    ``out_dir``; those missing (runs outside the pipeline) are embedded first with the model of ``folder``."""
    galleries = applicable_galleries(dataset, names)
    missing = {n: g for n, g in galleries.items()
               if not (paths.gallery_embeddings_dir(out_dir, n) / META_FILE).is_file()}
    if missing:
        log.info("no stored embeddings of %s on %s: embedding now", folder.name, sorted(missing))
        embed_galleries(load_model(folder), missing, out_dir, EmbedParams(), progress)
    return {n: read_embeddings(paths.gallery_embeddings_dir(out_dir, n), g) for n, g in galleries.items()}


def model_folder(reference: str) -> Path:
    """A model name (its folder under artifacts/checkpoints) or a folder path."""
    path = Path(reference)
    return path if (path / "config.json").is_file() else paths.checkpoint_dir(reference)


def run_embed(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    settings = params.read(EmbedParams, "embed")
    evaluate = params.read(EvaluateParams, "evaluate")
    folder = model_folder(args.model)
    model = load_model(folder)
    manifest = read_manifest(paths.prepared_dir(args.dataset))
    galleries = applicable_galleries(args.dataset, evaluate.cross_galleries)
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
