"""Facts about a manifest's files and relations that a validation suite asserts on.

Pure pandas/Pillow: the Great Expectations suite lives in ``stages/validate.py``; this module computes the
columns it checks (does each file exist and decode, its size and mode, cross-split hash leaks, whether a
sketch's instance link resolves to a photo) so the suite reports offending files by path.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from sbir.manifest import Manifest

TEST_SPLITS = ("test_seen", "test_unseen")


def inspect_image(path: Path) -> dict:
    """Whether the file exists and fully decodes, and its width, height and mode."""
    facts = {"file_exists": path.is_file(), "decodes": False, "width": 0, "height": 0, "mode": "", "error": ""}
    if not facts["file_exists"]:
        facts["error"] = "missing file"
        return facts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decodes every pixel: a truncated file fails here, not at open()
                facts.update(decodes=True, width=image.width, height=image.height, mode=image.mode)
    except Exception as error:  # noqa: BLE001 - any decoder failure is a finding, not a crash
        facts["error"] = f"{type(error).__name__}: {error}"
    return facts


def file_facts(manifest: Manifest, workers: int = 4, progress: bool = True) -> pd.DataFrame:
    """The manifest with one row of file facts per image (decoding is I/O- and C-bound: threads suffice)."""
    paths = [manifest.resolve(p) for p in manifest.frame["path"]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(tqdm(pool.map(inspect_image, paths), total=len(paths), desc="validate: decoding",
                         unit="img", disable=not progress))
    return pd.concat([manifest.frame.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def relation_facts(frame: pd.DataFrame, linked_photos: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add ``hash_leak`` (same bytes in train and a test split) and ``instance_resolves`` (a sketch's instance
    link names a photo of its own category: in ``frame``, or in ``linked_photos`` for a sketch-only set drawn for
    another dataset) columns."""
    frame = frame.copy()
    train_hashes = set(frame.loc[frame["split"] == "train", "content_hash"])
    test_hashes = set(frame.loc[frame["split"].isin(TEST_SPLITS), "content_hash"])
    frame["hash_leak"] = frame["content_hash"].isin(train_hashes & test_hashes)
    # a link resolves to a photo of the same category (splits may differ: SAKE's held-out seen-class sketches
    # link to training photos)
    photos = frame[frame["domain"] == "photo"] if linked_photos is None else linked_photos
    photo_keys = {(c, i) for c, i in zip(photos["category"], photos["instance_id"]) if isinstance(i, str)}
    linked = frame["domain"].eq("sketch") & frame["instance_id"].notna()
    keys = pd.Series(list(zip(frame["category"], frame["instance_id"])), index=frame.index)
    frame["instance_resolves"] = ~linked | keys.isin(photo_keys)
    return frame


def group_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per (split, category, domain), with zero rows for a domain missing from a category."""
    index = pd.MultiIndex.from_product(
        [sorted(frame["split"].unique()), sorted(frame["category"].unique()), ["photo", "sketch"]],
        names=["split", "category", "domain"])
    present = frame.groupby(["split", "category"]).size().rename("present")
    counts = frame.groupby(["split", "category", "domain"]).size().reindex(index, fill_value=0)
    counts = counts.rename("count").reset_index()
    keep = counts.set_index(["split", "category"]).index.isin(present.index)
    counts = counts[keep].reset_index(drop=True)
    counts["group"] = counts["split"] + "/" + counts["category"] + "/" + counts["domain"]
    return counts


def category_splits(frame: pd.DataFrame) -> pd.DataFrame:
    """Per category: the splits it occurs in, and whether it is both trained on and called unseen."""
    table = frame.groupby("category")["split"].agg(lambda s: ",".join(sorted(set(s)))).rename("splits").reset_index()
    table["seen_unseen_overlap"] = table["splits"].str.contains("train") & table["splits"].str.contains("test_unseen")
    return table
