"""The index stage: a user's folder of photos becomes a serving bundle; approximate kinds carry their measured
recall against the exact index."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_support import make_bundle

from sbir import bundle_layout

pytestmark = pytest.mark.slow


def test_an_approximate_bundle_stores_its_recall(tiny_openmoji: Path, tmp_path: Path) -> None:
    _, bundle = make_bundle(tmp_path, tiny_openmoji / "images" / "photo", kind="ivf")
    meta = bundle_layout.read_meta(bundle)
    assert meta["index"]["kind"] == "ivf" and 0.0 < meta["index"]["recall@100"] <= 1.0
    assert bundle_layout.read_index(bundle).spec.kind == "ivf"
    gallery = bundle_layout.read_gallery(bundle)
    assert len(gallery) == meta["gallery"]["size"] == 174 and list(gallery["id"]) == list(range(174))
    assert gallery["category"].nunique() == 87 and (gallery["label"] != "").all()
    assert len(list(bundle_layout.thumbs_dir(bundle).glob("*.png"))) == 174
    assert bundle_layout.thumbnail_path(bundle, 173).is_file()
    assert not list(tmp_path.glob(".bundle*"))  # written beside and swapped in whole
