"""Stage ``index``: the serving bundle — the champion's gallery index, its metadata and thumbnails.

Embeds a gallery with the champion's photo encoder (``stages.model_store``) and builds the index through
``sbir.index``: exact by default; approximate (HNSW or IVF) when asked, or with ``kind: auto`` for galleries
above ``approximate_above`` — then its recall@k against the exact index is measured (on sketch queries where the
dataset has them) and stored with it. The gallery is a prepared dataset's photos (``splits``; all by default) or
a user's folder of photos (``folder``; a photo's category is its parent folder's name), with the photo styles of
``styles`` (other artists' pictures of the same items, e.g. Twemoji and Fluent for OpenMoji-ZS) beside its own:
each photo's ``style`` (the set it came from) lets a search ask for one style.

Output ``artifacts/serving/bundle/`` (written beside and swapped in whole), laid out by ``sbir.bundle_layout``:
the champion's model tags, the gallery, the index and its recall as metadata, the index, the gallery table (id,
path, category, instance id, label, style) and a thumbnail per photo. ``package`` ships it in the Bento. Where a shared
model store is set (``register.store`` or ``ZSSBIR_MODEL_STORE``), the bundle is published there beside its
champion (``stages.shared_store``), for deployments that pull the champion instead of building it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from models.checkpoint import load_model
from models.embed import embed_paths
from sbir import bundle_layout, paths
from sbir.config import ConfigError, Count, Params, PositiveInt, as_params
from sbir.images import flatten_alpha
from sbir.index import IndexSpec, build_index, recall_at_k
from sbir.manifest import Manifest, read_manifest
from sbir.stage import run_stage, stage_parser
from stages.model_store import Registry, RegistryError
from stages.shared_store import SharedStore, publish_bundle, store_url

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
log = logging.getLogger("stages.index")


@dataclass
class IndexParams:
    """``params.yaml`` section ``index``."""

    dataset: str
    splits: list[str]  # empty: every split
    styles: list[str]  # photo styles of the dataset's items (artwork sets drawn for it) that join the gallery
    folder: str  # a user's photo folder instead of the dataset
    kind: Literal["exact", "hnsw", "ivf", "auto"]
    approximate_above: PositiveInt  # auto: IVF above this many photos
    recall_k: PositiveInt
    thumbnail_size: PositiveInt
    batch_size: PositiveInt
    workers: Count


def emoji_label(instance_id: str) -> str:
    """A readable name for an emoji hexcode (``1F408`` → ``cat``); other ids are returned unchanged."""
    try:
        names = [unicodedata.name(chr(int(part, 16))) for part in instance_id.split("-")
                 if part and int(part, 16) not in (0x200D, 0xFE0F)]
    except (ValueError, OverflowError):
        return instance_id
    return " ".join(names).lower() or instance_id


def gallery_rows(settings: IndexParams, root: Path = Path(".")) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(gallery photos with absolute ``file``, the dataset's sketches for measuring recall, or None)."""
    if settings.folder:
        folder = Path(settings.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"index.folder {folder} is not a folder of photos")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"index.folder {folder} holds no images ({sorted(IMAGE_SUFFIXES)})")
        rows = pd.DataFrame({"path": [p.relative_to(folder).as_posix() for p in files], "file": files,
                             "category": [p.parent.name if p.parent != folder else "" for p in files],
                             "instance_id": [p.stem for p in files], "label": [p.stem for p in files],
                             "style": folder.name})
        return rows, None
    manifest = read_manifest(root / paths.prepared_dir(settings.dataset))
    frame = manifest.frame
    if settings.splits:
        frame = frame[frame["split"].isin(settings.splits)]
    parts = [_photos(manifest, frame, settings.dataset)]
    for style in settings.styles:
        gallery = read_manifest(root / paths.prepared_dir(style))
        if gallery.extra.get("gallery_for") != settings.dataset or gallery.extra.get("domains") != ["photo"]:
            raise ConfigError(f"index.styles lists '{style}', which is not a photo style of {settings.dataset} "
                             f"(domains {gallery.extra.get('domains')}, drawn for {gallery.extra.get('gallery_for')})")
        styled = gallery.frame[gallery.frame["split"].isin(settings.splits)] if settings.splits else gallery.frame
        parts.append(_photos(gallery, styled, style))
    rows = pd.concat(parts, ignore_index=True)
    rows["label"] = [emoji_label(i) if settings.dataset.startswith("openmoji") else i for i in rows["instance_id"]]
    sketches = frame[frame["domain"] == "sketch"].head(1000).copy()
    sketches["file"] = [manifest.resolve(p) for p in sketches["path"]]
    return rows, sketches


def _photos(manifest: Manifest, frame: pd.DataFrame, style: str) -> pd.DataFrame:
    """A manifest's photo rows with their files and style (the set's name)."""
    rows = frame[frame["domain"] == "photo"].loc[:, ["path", "category", "instance_id"]].reset_index(drop=True)
    rows["path"] = [f"{style}/{p}" for p in rows["path"]]
    rows["style"] = style
    rows["file"] = [manifest.resolve(p) for p in frame[frame["domain"] == "photo"]["path"]]
    return rows


def write_thumbnails(files: list[Path], bundle: Path, size: int) -> None:
    """Each photo's thumbnail (at most ``size`` pixels a side, transparency flattened) into the bundle folder."""
    for row_id, file in enumerate(files):
        with Image.open(file) as image:
            picture = flatten_alpha(image).convert("RGB")
            picture.thumbnail((size, size))
            bundle_layout.write_thumbnail(bundle, row_id, picture)


def build_bundle(registry: Registry, dataset: str, protocol: str, settings: IndexParams, out: Path,
                 progress: bool = True) -> dict[str, Any]:
    """Embed the gallery with the champion's photo encoder, index it and write the bundle folder ``out``."""
    champion = registry.champion(dataset, protocol)
    if champion is None:
        raise RegistryError(f"no champion for {dataset} / {protocol} in {registry.home}; run the register stage")
    model = load_model(registry.model_path("photo", champion["version"]) / "checkpoint")
    rows, sketches = gallery_rows(settings)
    vectors = embed_paths(model, list(rows["file"]), "photo", settings.batch_size, settings.workers, prefetch=2,
                          progress=progress)
    # auto: IVF, which beat HNSW at 1M (recall@100 0.9999 at 15.7x exact vs 0.98 at 9.3x; index_search.md)
    kind = settings.kind if settings.kind != "auto" else ("ivf" if len(rows) > settings.approximate_above
                                                          else "exact")
    index = build_index(vectors, IndexSpec(kind=kind))
    quality: dict[str, Any] = {"kind": kind, "spec": as_params(index.spec)}
    if kind != "exact":
        if sketches is not None and len(sketches):
            queries = embed_paths(load_model(registry.model_path("sketch", champion["version"]) / "checkpoint"),
                                  list(sketches["file"]), "sketch", settings.batch_size, settings.workers, 1,
                                  progress=False)
        else:
            queries = vectors[np.random.default_rng(0).permutation(len(vectors))[:1000]]
        quality[f"recall@{settings.recall_k}"] = recall_at_k(index, build_index(vectors), queries, settings.recall_k)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bundle_layout.write_index(tmp, index)
    bundle_layout.write_gallery(tmp, rows.drop(columns="file"))
    write_thumbnails(list(rows["file"]), tmp, settings.thumbnail_size)
    meta = {"champion": {key: champion[key] for key in ("version", "method", "dataset", "protocol", "score",
                                                        "models")},
            "gallery": {"source": settings.folder or f"{settings.dataset} photos "
                                                     f"({', '.join(settings.splits) or 'every split'})"
                                                     + "".join(f" + {style}" for style in settings.styles),
                        "size": len(rows), "categories": sorted(set(rows["category"]) - {""}),
                        "styles": {str(k): int(v) for k, v in rows["style"].value_counts(sort=False).items()}},
            "index": quality, "embedding_dim": int(vectors.shape[1])}  # no timings: the bundle is reproducible
    bundle_layout.write_meta(tmp, meta)
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    return meta


def run_index(args: argparse.Namespace, params: Params) -> int:
    settings = params.read(IndexParams, "index")
    if args.folder:
        settings.folder = args.folder
    meta = build_bundle(Registry(os.environ["BENTOML_HOME"]), params.value("evaluate.dataset", str),
                        params.value("register.metric", str), settings, args.out, not args.no_progress)
    log.info("indexed %d photos (%s) with %s %s: %s index%s → %s", meta["gallery"]["size"], meta["gallery"]["source"],
             meta["champion"]["method"], meta["champion"]["version"], meta["index"]["kind"],
             "".join(f", {k} {v:.3f}" for k, v in meta["index"].items() if k.startswith("recall")), args.out)
    if url := store_url(params.value("register.store", str)):
        publish_bundle(SharedStore(url), args.out, meta["champion"]["version"])
        log.info("serving bundle of %s published to %s", meta["champion"]["version"], url)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--folder", help="index this folder of photos instead of params index.folder/dataset")
    parser.add_argument("--out", type=Path, default=paths.serving_bundle())
    return run_stage("index", parser, run_index, argv, project_homes=True)


if __name__ == "__main__":
    sys.exit(main())
