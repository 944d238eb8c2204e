"""Stored embeddings: one model's vectors of a dataset's test rows, tied to the manifest they came from.

A folder holds ``vectors.npy`` (n × d float32, unit rows), ``rows.parquet`` (for vector i: its manifest row
number and the row's path, domain, split, category, instance id, and ``style``: empty for the dataset's own
images, a style name for sketches redrawn for the style-shift report, whose ``path`` is under their styles folder) and ``meta.json`` (model description,
manifest fingerprint, counts). Evaluation, the gallery index and the service read vectors from here.

Artwork sets: a model's embeddings of each photo gallery of ``evaluate.cross_galleries`` and each sketch set of
``evaluate.cross_sketches`` built for the dataset (:func:`applicable_galleries`) are kept in ``galleries/<set>/`` of
its embeddings folder
(``sbir.paths.gallery_embeddings_dir``); the embed stage writes them, evaluation reads them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sbir import paths
from sbir.errors import DataError
from sbir.io import atomic_write, atomic_write_json
from sbir.manifest import Manifest, ManifestError, manifest_fingerprint, read_manifest

EMBEDDED_SPLITS = ("test_unseen", "test_seen")
VECTORS_FILE = "vectors.npy"
ROWS_FILE = "rows.parquet"
META_FILE = "meta.json"
ROW_COLUMNS = ["row", "path", "domain", "split", "category", "instance_id", "style"]
log = logging.getLogger(__name__)


class EmbeddingsError(DataError):
    """Stored embeddings that are missing, inconsistent, or from another manifest."""


@dataclass
class Embeddings:
    """Vectors with the manifest rows they belong to."""

    vectors: np.ndarray
    rows: pd.DataFrame
    meta: dict[str, Any]

    def select(self, *, split: str, domain: str, style: str = "") -> tuple[np.ndarray, pd.DataFrame]:
        """Vectors and rows of one split and domain (the dataset's own images, or one style's), in order."""
        mask = ((self.rows["split"] == split) & (self.rows["domain"] == domain) & (self.rows["style"] == style))
        return self.vectors[mask.to_numpy()], self.rows[mask].reset_index(drop=True)

    @property
    def styles(self) -> list[str]:
        """The sketch styles embedded besides the dataset's own (style-shift report)."""
        return sorted(set(self.rows["style"]) - {""})


def manifest_rows(manifest: Manifest, splits: tuple[str, ...]) -> pd.DataFrame:
    """The rows to embed, with their manifest row numbers."""
    frame = manifest.frame.reset_index(drop=True)
    rows = frame[frame["split"].isin(splits)].copy()
    rows.insert(0, "row", rows.index.astype("int64"))
    rows["style"] = ""
    return rows.loc[:, ROW_COLUMNS].reset_index(drop=True)


def write_embeddings(folder: str | Path, vectors: np.ndarray, rows: pd.DataFrame, meta: dict[str, Any]) -> Path:
    folder = Path(folder)
    if len(vectors) != len(rows):
        raise EmbeddingsError(f"{folder}: {len(vectors)} vectors for {len(rows)} rows")
    atomic_write(folder / VECTORS_FILE, lambda handle: np.save(handle, vectors.astype(np.float32, copy=False)))
    buffer = io.BytesIO()
    rows.loc[:, ROW_COLUMNS].to_parquet(buffer, index=False)
    atomic_write(folder / ROWS_FILE, lambda handle: handle.write(buffer.getvalue()))
    atomic_write_json(folder / META_FILE, {**meta, "count": int(len(rows)), "dim": int(vectors.shape[1])})
    return folder


def read_embeddings(folder: str | Path, manifest: Manifest | None = None) -> Embeddings:
    """Load a folder; with ``manifest``, check the vectors were computed from that very manifest."""
    folder = Path(folder)
    missing = [name for name in (VECTORS_FILE, ROWS_FILE, META_FILE) if not (folder / name).is_file()]
    if missing:
        raise EmbeddingsError(f"{folder}: missing {missing}; run the embed stage for this model and dataset")
    vectors = np.load(folder / VECTORS_FILE)
    rows = pd.read_parquet(folder / ROWS_FILE)
    meta = json.loads((folder / META_FILE).read_text())
    if len(vectors) != len(rows) or vectors.ndim != 2:
        raise EmbeddingsError(f"{folder}: {VECTORS_FILE} has shape {vectors.shape} for {len(rows)} rows")
    if manifest is not None and meta.get("manifest_fingerprint") != manifest_fingerprint(manifest):
        raise EmbeddingsError(f"{folder}: computed from another version of the {manifest.dataset} manifest; "
                              "re-run the embed stage")
    return Embeddings(vectors, rows, meta)


def has_embeddings(folder: str | Path) -> bool:
    """Whether ``folder`` holds complete stored embeddings (``meta.json`` is written last)."""
    return (Path(folder) / META_FILE).is_file()


def applicable_galleries(dataset: str, names: Sequence[str],
                         listed_in: str = "evaluate.cross_galleries") -> dict[str, Manifest]:
    """The prepared artwork sets among ``names`` (listed in the param ``listed_in``) that were built for
    ``dataset`` (others: logged, skipped)."""
    galleries = {}
    for name in names:
        try:
            gallery = read_manifest(paths.prepared_dir(name))
        except ManifestError as error:
            raise ManifestError(f"{listed_in} lists '{name}': {error} (or drop it from the list)"
                                ) from error
        built_for = gallery.extra.get("gallery_for")
        if built_for == dataset:
            galleries[name] = gallery
        else:
            log.info("gallery %s was built for %s, not %s: skipped", name, built_for, dataset)
    return galleries
