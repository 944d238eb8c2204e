"""The serving bundle's layout: the one module that names its files, and writes and reads each part.

The ``index`` stage writes a bundle, ``package`` ships it in the Bento and ``serving`` reads it. A bundle folder
holds ``meta.json`` (the champion's model tags, the gallery, the index and its recall, the embedding dimension),
``index.faiss`` (with its sidecar, :meth:`sbir.index.RetrievalIndex.save`), ``gallery.parquet`` (one row per
photo: ``id`` = its index id, then path, category, instance id, label) and ``thumbs/<id>.png`` (each photo's
thumbnail). Heavy libraries are imported only by the parts that need them: the service reads ``meta.json`` at
import time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbir.io import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from sbir.index import RetrievalIndex

META_FILE = "meta.json"
INDEX_FILE = "index.faiss"
GALLERY_FILE = "gallery.parquet"
THUMBS_DIR = "thumbs"


def meta_path(bundle: str | Path) -> Path:
    """The bundle's ``meta.json``: its presence marks a bundle folder."""
    return Path(bundle) / META_FILE


def write_meta(bundle: str | Path, meta: dict[str, Any]) -> None:
    """Write the metadata document (indented JSON, atomically)."""
    atomic_write_json(meta_path(bundle), meta)


def read_meta(bundle: str | Path) -> dict[str, Any]:
    """The metadata document written by :func:`write_meta`."""
    return json.loads(meta_path(bundle).read_text())


def write_index(bundle: str | Path, index: RetrievalIndex) -> None:
    """Save the gallery index (and its sidecar)."""
    index.save(Path(bundle) / INDEX_FILE)


def read_index(bundle: str | Path) -> RetrievalIndex:
    """Load the gallery index written by :func:`write_index`."""
    from sbir.index import RetrievalIndex

    return RetrievalIndex.load(Path(bundle) / INDEX_FILE)


def write_gallery(bundle: str | Path, rows: pd.DataFrame) -> None:
    """Write the gallery table: ``rows`` in index order (row number = id), ``id`` prepended as a column."""
    rows.rename_axis("id").reset_index().to_parquet(Path(bundle) / GALLERY_FILE, index=False)


def read_gallery(bundle: str | Path) -> pd.DataFrame:
    """The gallery table written by :func:`write_gallery` (``id`` a column, the default row index)."""
    import pandas as pd

    return pd.read_parquet(Path(bundle) / GALLERY_FILE)


def thumbs_dir(bundle: str | Path) -> Path:
    """The folder of the photos' thumbnails."""
    return Path(bundle) / THUMBS_DIR


def thumbnail_path(bundle: str | Path, photo_id: int) -> Path:
    """The thumbnail of gallery photo ``photo_id``."""
    return thumbs_dir(bundle) / f"{photo_id}.png"


def write_thumbnail(bundle: str | Path, photo_id: int, picture: Image.Image) -> None:
    """Save ``picture`` as the thumbnail of gallery photo ``photo_id`` (optimised PNG)."""
    path = thumbnail_path(bundle, photo_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
