"""The manifest: one row per image, the only way later stages find images.

Columns (docs/architecture.md): ``path`` (relative to the manifest's image root), ``domain`` (sketch | photo),
``category``, ``instance_id`` (the photo a sketch was drawn from; null when unknown), ``split``
(train | test_seen | test_unseen) and ``content_hash`` (SHA-256 of the file's bytes). Stored as Parquet
with the dataset name and image root in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sbir.io import atomic_write
from sbir.errors import DataError

MANIFEST_FILE = "manifest.parquet"
DOMAINS = ("sketch", "photo")
SPLITS = ("train", "test_seen", "test_unseen")
COLUMNS = ("path", "domain", "category", "instance_id", "split", "content_hash")
_METADATA_KEY = b"sbir"

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("domain", pa.string()),
        ("category", pa.string()),
        ("instance_id", pa.string()),
        ("split", pa.string()),
        ("content_hash", pa.string()),
    ]
)


class ManifestError(DataError):
    """A manifest that cannot be used: names the file and the field at fault."""


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def check_frame(frame: pd.DataFrame, source: str = "manifest") -> None:
    """Raise ManifestError unless the frame has the manifest's columns and allowed values."""
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {missing}; expected {list(COLUMNS)}")
    for column, allowed in (("domain", DOMAINS), ("split", SPLITS)):
        bad = sorted(set(frame[column].dropna().unique()) - set(allowed))
        if bad or frame[column].isna().any():
            raise ManifestError(f"{source}: column '{column}' has values {bad or ['<null>']}; expected one of {allowed}")


@dataclass
class Manifest:
    """A dataset's manifest plus where its image paths are rooted."""

    frame: pd.DataFrame
    dataset: str
    image_root: Path
    extra: dict = field(default_factory=dict)

    def resolve(self, relative_path: str) -> Path:
        """Absolute path of one manifest row's image."""
        return self.image_root / relative_path

    def select(self, *, split: str | None = None, domain: str | None = None) -> pd.DataFrame:
        """Rows of one split and/or domain, in manifest order."""
        mask = pd.Series(True, index=self.frame.index)
        if split is not None:
            mask &= self.frame["split"] == split
        if domain is not None:
            mask &= self.frame["domain"] == domain
        return self.frame[mask]


def manifest_fingerprint(manifest: Manifest) -> str:
    """SHA-256 over the manifest's rows (content hashes included): which data a model or an embedding saw."""
    frame = manifest.frame.loc[:, list(COLUMNS)]
    return hashlib.sha256(frame.fillna("").to_csv(index=False).encode()).hexdigest()


def write_manifest(frame: pd.DataFrame, out_dir: str | Path, *, dataset: str, image_root: str | Path = ".",
                   extra: dict | None = None) -> Path:
    """Write ``manifest.parquet`` into ``out_dir``; ``image_root`` is stored relative to it when possible."""
    out_dir = Path(out_dir)
    check_frame(frame, str(out_dir / MANIFEST_FILE))
    table = pa.Table.from_pandas(frame.loc[:, list(COLUMNS)].reset_index(drop=True), schema=SCHEMA,
                                 preserve_index=False)
    meta = {"dataset": dataset, "image_root": str(image_root), "extra": extra or {}}
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode()})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MANIFEST_FILE
    atomic_write(target, lambda handle: pq.write_table(table, handle))
    return target


def read_manifest(location: str | Path) -> Manifest:
    """Read a manifest from its directory or file; relative image roots resolve against that directory."""
    location = Path(location)
    path = location / MANIFEST_FILE if location.is_dir() else location
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here; run the prepare stage for this dataset first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ManifestError(f"{path}: not a readable Parquet manifest ({error})") from error
    raw_meta = (table.schema.metadata or {}).get(_METADATA_KEY)
    if raw_meta is None:
        raise ManifestError(f"{path}: Parquet file lacks the 'sbir' metadata (dataset, image_root)")
    meta = json.loads(raw_meta)
    frame = table.to_pandas()
    check_frame(frame, str(path))
    root = Path(meta["image_root"])
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    return Manifest(frame=frame, dataset=meta["dataset"], image_root=root, extra=meta.get("extra", {}))
