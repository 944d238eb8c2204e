"""The serving gallery in every photo style: index.styles adds other artists' pictures of the dataset's items
beside its own, each with its style; a search can ask for one style (and a category), and an unknown style is a
422 naming the known ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.checkpoint import save_baseline
from models.registry import create_model
from sbir import bundle_layout, paths
from sbir.datasets import create
from sbir.manifest import read_manifest
from sbir.config import ConfigError
from serving.bundle import SearchBundle
from serving.uploads import BadUpload
from stages.index import IndexParams, build_bundle
from stages.model_store import Registry
from helpers import config, params_section

PROTOCOL = "zero_shot/map_all/sklearn/query"


@pytest.fixture
def bundle(tiny_openmoji: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SearchBundle:
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/openmoji_zs").symlink_to(tiny_openmoji)
    monkeypatch.chdir(tmp_path)
    for name in ("twemoji", "fluent_hc"):
        create(name, **params_section(f"prepare.{name}")).prepare(paths.prepared_dir(name), progress=False)
    folder = tmp_path / "models/baseline_hog"
    save_baseline(folder, "baseline_hog", params_section("baseline_hog"),
                  create_model("baseline_hog", params_section("baseline_hog")))
    registry = Registry(tmp_path / "bentoml")
    registry.register(folder, method="baseline_hog", dataset="openmoji_zs", protocol=PROTOCOL, score=0.5,
                      metrics={}, params={}, git="test")
    with pytest.raises(ConfigError, match="'fluent_hc', which is not a photo style of openmoji_zs"):
        build_bundle(registry, "openmoji_zs", PROTOCOL, config(IndexParams, "index", styles=["fluent_hc"],
                                                              workers=0), tmp_path / "bad", progress=False)
    settings = config(IndexParams, "index", splits=["test_unseen"], styles=["twemoji"], workers=0)
    meta = build_bundle(registry, "openmoji_zs", PROTOCOL, settings, tmp_path / "bundle", progress=False)
    unseen = read_manifest(tiny_openmoji).select(split="test_unseen", domain="photo")
    twemoji = read_manifest(paths.prepared_dir("twemoji")).select(split="test_unseen")
    assert meta["gallery"]["styles"] == {"openmoji_zs": len(unseen), "twemoji": len(twemoji)}
    assert meta["gallery"]["source"] == "openmoji_zs photos (test_unseen) + twemoji"
    gallery = bundle_layout.read_gallery(tmp_path / "bundle")
    assert gallery["path"].is_unique and set(gallery["style"]) == {"openmoji_zs", "twemoji"}
    return SearchBundle(tmp_path / "bundle", registry.model_path("sketch", registry.champion("openmoji_zs", PROTOCOL)["version"]),
                        registry.model_path("photo", registry.champion("openmoji_zs", PROTOCOL)["version"]))


def test_search_every_style_or_one(bundle: SearchBundle, tiny_openmoji: Path) -> None:
    sketch_row = read_manifest(tiny_openmoji).select(split="test_unseen", domain="sketch").iloc[0]
    with Image.open(tiny_openmoji / sketch_row["path"]) as image:
        sketch = image.convert("L")
    assert bundle.info()["styles"] == ["openmoji_zs", "twemoji"]
    everything = bundle.search(sketch, k=bundle.size)["results"]
    assert {hit["style"] for hit in everything} == {"openmoji_zs", "twemoji"} and len(everything) == bundle.size
    for style in ("openmoji_zs", "twemoji"):
        only = bundle.search(sketch, k=bundle.size, style=style)["results"]
        assert only and {hit["style"] for hit in only} == {style}
        expected = [hit["id"] for hit in everything if hit["style"] == style]
        assert [hit["id"] for hit in only] == expected  # the same order as in the full ranking
    both = bundle.search(sketch, k=50, style="twemoji", category=sketch_row["category"])["results"]
    assert both and {(hit["style"], hit["category"]) for hit in both} == {("twemoji", sketch_row["category"])}
    with pytest.raises(BadUpload, match="style: 'fluent_3d' is not a style of the gallery; known: openmoji_zs, twemoji"):
        bundle.search(sketch, style="fluent_3d")
    assert np.isfinite([hit["score"] for hit in everything]).all()
