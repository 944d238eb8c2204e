"""Training on artwork styles: the styles' training rows join the split, a linked sketch is paired with its item
in a random photo style, every rendering of its item is an instance positive, and held-out styles or sets of
another dataset are refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from models.data import PairSampler, StepBatches, read_split
from sbir.config import ConfigError
from sbir.manifest import read_manifest, write_manifest
from stages.train import training_styles


def _rows(domain: str, items: list[tuple[str, str]], split: str = "train", tag: str = "") -> list[dict]:
    return [{"path": f"{domain}/{item}{tag}.png", "domain": domain, "category": category, "instance_id": item,
             "split": split, "content_hash": f"{domain}{item}{tag}".ljust(64, "0")} for category, item in items]


ITEMS = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """openmoji_zs (a sketch and a photo per item), a photo style and a sketch style of the same items."""
    monkeypatch.chdir(tmp_path)
    prepared = tmp_path / "data/prepared"
    base = _rows("sketch", ITEMS) + _rows("photo", ITEMS) + _rows("photo", [("c", "c1")], "test_unseen")
    write_manifest(pd.DataFrame(base), prepared / "openmoji_zs", dataset="openmoji_zs")
    extra = {"gallery_for": "openmoji_zs"}
    write_manifest(pd.DataFrame(_rows("photo", ITEMS, tag="-tw")), prepared / "twemoji", dataset="twemoji",
                   extra={**extra, "domains": ["photo"]})
    write_manifest(pd.DataFrame(_rows("sketch", ITEMS[:2], tag="-hc")), prepared / "fluent_hc", dataset="fluent_hc",
                   extra={**extra, "domains": ["sketch"]})
    write_manifest(pd.DataFrame(_rows("photo", ITEMS)), prepared / "other", dataset="other",
                   extra={"gallery_for": "sketchy25"})
    return tmp_path


def test_styles_join_the_split_and_pair_sketches_with_any_rendering(project: Path) -> None:
    base = read_manifest("data/prepared/openmoji_zs")
    plain = read_split(base, "train")
    data = read_split(base, "train", training_styles("openmoji_zs", ["twemoji", "fluent_hc"]))
    assert (len(data.sketch_paths), len(data.photo_paths)) == (6, 8) and data.categories == ["a", "b"]
    assert data.fingerprint != plain.fingerprint and plain.sketch_instance is None
    # instance indices: a sketch (OpenMoji or Fluent) and both photos of its item share one
    assert data.sketch_instance.tolist() == [0, 1, 2, 3, 0, 1] and data.photo_instance.tolist() == [0, 1, 2, 3] * 2
    assert data.sketch_to_photo.tolist() == [0, 1, 2, 3, 0, 1]  # the first photo: the dataset's own
    sampler = PairSampler(data, batch_size=6, seed=0)
    styles_seen = set()
    for epoch in range(8):
        sketches, photos, linked = sampler.batch(epoch, 0)
        assert linked.all() and (data.photo_instance[photos] == data.sketch_instance[sketches]).all()
        styles_seen |= {int(p) >= 4 for p in photos}
    assert styles_seen == {False, True}  # both photo styles are drawn
    item = StepBatches(sampler, {"sketch": None, "photo": None}, cache={"sketch": torch.zeros(6, 1),
                                                                       "photo": torch.zeros(8, 1)})[0]
    same = item.sketch_link[:, None] == item.photo_index[None, :]
    assert same.diagonal().all()  # each pair's photo shows the sketch's item, whatever its style
    assert torch.equal(same, data.sketch_instance[sampler.batch(0, 0)[0]][:, None] ==
                       data.photo_instance[sampler.batch(0, 0)[1]][None, :])


def test_without_styles_the_split_is_as_before(project: Path) -> None:
    data = read_split(read_manifest("data/prepared/openmoji_zs"), "train")
    sampler = PairSampler(data, batch_size=4, seed=0)
    sketches, photos, linked = sampler.batch(0, 0)
    assert torch.equal(photos, data.sketch_to_photo[sketches]) and linked.all()
    item = StepBatches(sampler, {}, cache={"sketch": torch.zeros(4, 1), "photo": torch.zeros(4, 1)})[0]
    assert torch.equal(item.photo_index, photos)  # identities are photo indices, as before


def test_held_out_unknown_and_foreign_styles_are_refused(project: Path) -> None:
    for held_out in ("emojione_mono", "fluent_3d"):
        with pytest.raises(ConfigError, match="held-out styles are never trained on"):
            training_styles("openmoji_zs", ["twemoji", held_out])
    with pytest.raises(ConfigError, match="train.styles lists 'symbola'.*prepare stage"):
        training_styles("openmoji_zs", ["symbola"])
    with pytest.raises(ConfigError, match="drawn for 'sketchy25', not for train.dataset 'openmoji_zs'"):
        training_styles("openmoji_zs", ["other"])
