"""Embed images through the model interface: decoded in DataLoader workers, a bounded number of batches ahead.

Also a dataset's test rows (and its cross-dataset galleries) into stored embeddings (``sbir.embeddings``): what
the embed stage writes, and what evaluation computes on the fly where nothing is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.checkpoint import load_model
from models.data import image_loader
from models.interface import RetrievalModel
from sbir import paths
from sbir.config import Count, PositiveInt
from sbir.embeddings import (EMBEDDED_SPLITS, Embeddings, applicable_galleries, has_embeddings, manifest_rows,
                             read_embeddings, write_embeddings)
from sbir.manifest import Manifest, manifest_fingerprint

log = logging.getLogger(__name__)


@dataclass
class EmbedParams:
    """``params.yaml`` section ``embed``: how images are loaded (runtime only: the vectors do not depend on it)."""

    batch_size: PositiveInt
    workers: Count  # DataLoader processes (0: decode in the main process)
    prefetch: PositiveInt


def embed_paths(model: RetrievalModel, paths: Sequence[Path], domain: str, batch_size: int, workers: int,
                prefetch: int, progress: bool = True) -> np.ndarray:
    """(len(paths), embedding_dim) float32 unit rows, in the order of ``paths``.

    Workers decode to the uint8 input the domain's encoder declares; the model normalises each batch as a tensor.
    At most ``workers × prefetch`` batches are decoded ahead, so memory does not grow with the number of images.
    """
    if not paths:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    loader = image_loader(paths, model.preprocess(domain), batch_size, workers=workers, prefetch=prefetch)
    out = [model.encode_batch(batch, domain) for batch in tqdm(loader, desc=f"embedding {domain}s", unit="batch",
                                                                 disable=not progress)]
    return np.concatenate(out).astype(np.float32, copy=False)


def _loading(params: EmbedParams) -> dict[str, int]:
    """``embed_paths``'s loader keywords from ``params``."""
    return {"batch_size": params.batch_size, "workers": params.workers, "prefetch": params.prefetch}


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
        vectors[mask] = embed_paths(model, chosen, domain, progress=progress, **_loading(params))
    seconds = time.perf_counter() - started
    meta = {"dataset": manifest.dataset, "model": model.describe(), "splits": list(EMBEDDED_SPLITS),
            "manifest_fingerprint": manifest_fingerprint(manifest)}
    write_embeddings(out_dir, vectors, rows, meta)
    log.info("embedded %d images with %s in %.1f s -> %s", len(rows), model.name, seconds, out_dir)
    return {**meta, "count": len(rows), "seconds": round(seconds, 1)}


def embed_galleries(model: RetrievalModel, galleries: dict[str, Manifest], out_dir: Path,
                    params: EmbedParams, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Embed each artwork set's test images into ``galleries/<name>/`` of a model's embeddings folder ``out_dir``."""
    return {name: embed_dataset(model, gallery, paths.gallery_embeddings_dir(out_dir, name), params, progress)
            for name, gallery in galleries.items()}


def stored_galleries(folder: Path, dataset: str, names: Sequence[str], out_dir: Path, params: EmbedParams,
                     progress: bool = True, listed_in: str = "evaluate.cross_galleries") -> dict[str, Embeddings]:
    """The stored embeddings of each gallery of ``names`` built for ``dataset`` in a model's embeddings folder
    ``out_dir``; those missing (runs outside the pipeline) are embedded first with the model of ``folder``."""
    galleries = applicable_galleries(dataset, names, listed_in)
    missing = {n: g for n, g in galleries.items() if not has_embeddings(paths.gallery_embeddings_dir(out_dir, n))}
    if missing:
        log.info("no stored embeddings of %s on %s: embedding now", folder.name, sorted(missing))
        embed_galleries(load_model(folder), missing, out_dir, params, progress=progress)
    return {n: read_embeddings(paths.gallery_embeddings_dir(out_dir, n), g) for n, g in galleries.items()}
