"""The index stage: a user's folder of photos becomes a serving bundle; approximate kinds carry their measured
recall against the exact index."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from serving_support import make_bundle

from sbir.index import RetrievalIndex

pytestmark = pytest.mark.slow


def test_an_approximate_bundle_stores_its_recall(tiny_openmoji: Path, tmp_path: Path) -> None:
    _, bundle = make_bundle(tmp_path, tiny_openmoji / "images" / "photo", kind="ivf")
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["index"]["kind"] == "ivf" and 0.0 < meta["index"]["recall@100"] <= 1.0
    assert RetrievalIndex.load(bundle / "index.faiss").spec.kind == "ivf"
    gallery = pd.read_parquet(bundle / "gallery.parquet")
    assert len(gallery) == meta["gallery"]["size"] == 174 and list(gallery["id"]) == list(range(174))
    assert gallery["category"].nunique() == 87 and (gallery["label"] != "").all()
    assert len(list((bundle / "thumbs").glob("*.png"))) == 174
    assert not list(tmp_path.glob(".bundle*"))  # written beside and swapped in whole
