from collections import Counter
from pathlib import Path

import pytest

from sbir.config import ConfigError
from sbir.datasets import DatasetError, create, summarize
from sbir.datasets.openmoji import (draw_unseen_categories, emoji_test_file, load_catalogue, load_split,
                                    openmoji_svg_dir, select_categories, stable_fraction)
from sbir.manifest import read_manifest
from helpers import params_section


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(emoji_test_file(), openmoji_svg_dir())


def test_catalogue_excludes_skin_tones_and_keeps_fe0f_fallback(catalogue) -> None:
    hexcodes = {item.hexcode for item in catalogue}
    assert not any(tone in code for code in hexcodes for tone in ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"))
    assert "2764" in hexcodes  # "2764 FE0F" (red heart) is stored by OpenMoji without FE0F
    assert "0023-FE0F-20E3" in hexcodes  # keycaps keep it
    assert {item.subgroup for item in catalogue if item.hexcode == "1F600"} == {"face-smiling"}


def test_selection_rules_and_split_file(catalogue) -> None:
    selected = select_categories(catalogue, 5, ("Flags",))
    sizes = Counter(item.subgroup for item in selected)
    assert min(sizes.values()) >= 5 and "country-flag" not in sizes
    assert len(sizes) == 87
    unseen = load_split()["unseen_categories"]
    assert len(unseen) == 17 and set(unseen) <= set(sizes)


def test_split_file_is_reproduced_by_its_documented_draw(catalogue) -> None:
    selected = select_categories(catalogue, 5, ("Flags",))
    assert draw_unseen_categories(selected, fraction=0.2, min_size=8, seed=0) == load_split()["unseen_categories"]


def test_split_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("unseen: [a]\n")
    with pytest.raises(DatasetError, match="unseen_categories"):
        load_split(tmp_path / "bad.yaml")
    (tmp_path / "ghost.yaml").write_text("unseen_categories: [no-such-subgroup]\n")
    with pytest.raises(DatasetError, match="no-such-subgroup"):
        create("openmoji_zs", **params_section("prepare.openmoji_zs", split_file=str(tmp_path / "ghost.yaml"))).items_with_splits()


def test_full_split_assignment_is_zero_shot() -> None:
    assigned = create("openmoji_zs", **params_section("prepare.openmoji_zs")).items_with_splits()
    unseen = set(load_split()["unseen_categories"])
    by_split = Counter(split for _, split in assigned)
    assert all((split == "test_unseen") == (item.subgroup in unseen) for item, split in assigned)
    assert 0.05 < by_split["test_seen"] / (by_split["train"] + by_split["test_seen"]) < 0.15


def test_stable_fraction_is_uniformish_and_pinned() -> None:
    values = [stable_fraction(str(i)) for i in range(2000)]
    # pinned: a change here silently moves emoji between train and test_seen
    assert [round(stable_fraction(k), 12) for k in ("0", "1", "openmoji")] == [0.374708855292, 0.420024064369,
                                                                               0.584832575605]
    assert 0.45 < sum(values) / len(values) < 0.55 and min(values) >= 0 and max(values) < 1


def test_prepared_tiny_dataset(tiny_openmoji: Path) -> None:
    manifest = read_manifest(tiny_openmoji)
    frame = manifest.frame
    counts = summarize(frame)
    assert counts["categories"] == 87
    assert set(frame["domain"]) == {"sketch", "photo"}
    photos = frame[frame["domain"] == "photo"].set_index("instance_id")
    sketches = frame[frame["domain"] == "sketch"]
    assert (sketches.groupby("instance_id").size() == 2).all()  # sketches_per_item=2
    # every sketch links to the photo it was drawn from, in the same split and category
    linked = photos.loc[sketches["instance_id"]]
    assert (linked["split"].values == sketches["split"].values).all()
    assert (linked["category"].values == sketches["category"].values).all()
    assert frame["content_hash"].is_unique
    assert all(manifest.resolve(p).is_file() for p in frame["path"])
    card = (tiny_openmoji / "DATASET_CARD.md").read_text()
    assert "CC BY-SA 4.0" in card and "OpenMoji" in card
    assert manifest.extra["attribution"].startswith("All emojis designed by OpenMoji")


def test_prepare_is_deterministic(tiny_openmoji: Path, tmp_path: Path) -> None:
    again = create("openmoji_zs", **params_section("prepare.openmoji_zs", max_items_per_category=2, sketches_per_item=2, image_size=64,
                   workers=1)).prepare(tmp_path / "again", progress=False)
    first = read_manifest(tiny_openmoji).frame
    assert first["content_hash"].tolist() == again.frame["content_hash"].tolist()


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(DatasetError, match="image_size"):
        create("openmoji_zs", **params_section("prepare.openmoji_zs", image_size=4))
    with pytest.raises(ConfigError, match=r"prepare.openmoji_zs: unknown key\(s\) \['colour'\]"):
        create("openmoji_zs", **params_section("prepare.openmoji_zs", colour=True))
    with pytest.raises(ConfigError, match="prepare.openmoji_zs.image_size: expected int, got '64'"):
        create("openmoji_zs", **params_section("prepare.openmoji_zs", image_size="64"))
