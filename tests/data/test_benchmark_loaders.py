"""Loaders of the real benchmarks (sbir.datasets.benchmarks) on tiny generated trees in the published layouts."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmark_fixtures import make_quickdraw_tree, make_sketchy_tree, make_tuberlin_tree
from sbir.config import ConfigError
from sbir.datasets import DatasetError, available, create
from sbir.datasets.benchmark_lists import shipped_class_list
from sbir.manifest import file_sha256, read_manifest


def _counts(manifest) -> Counter:
    return Counter(zip(manifest.frame["split"], manifest.frame["domain"]))


def _prepare(name: str, root: Path, out: Path, **params):
    return create(name, root=root, **params).prepare(out, progress=False)


def test_all_four_benchmarks_are_registered():
    assert {"sketchy21", "sketchy25", "tuberlin30", "quickdraw30"} <= set(available())


def test_shipped_class_lists_match_the_reference():
    assert len(shipped_class_list("sketchy21_unseen.txt")) == 21
    assert len(shipped_class_list("sketchy25_unseen.txt")) == 25
    tuberlin = shipped_class_list("tuberlin30_unseen.txt")
    assert len(tuberlin) == 30 and {"hot air balloon", "t-shirt", "frying-pan"} <= set(tuberlin)
    quickdraw = shipped_class_list("quickdraw30_unseen.txt")
    assert len(quickdraw) == 30 and {"palm tree", "fire_hydrant"} <= set(quickdraw)
    seen = shipped_class_list("quickdraw80_seen.txt")
    assert len(seen) == 80 and not set(seen) & set(quickdraw) and "hot-air_balloon" in seen


@pytest.mark.parametrize(("split", "layout", "split_dir"),
                         [(21, "zse", "zeroshot0"), (21, "sake", "zeroshot2"), (25, "zse", "zeroshot1"),
                          (25, "sake", "zeroshot1")])
def test_sketchy_lists_give_the_listed_counts(tmp_path, split, layout, split_dir):
    tree = make_sketchy_tree(tmp_path / "Sketchy", split, layout)
    assert tree.split_dir.name == split_dir
    manifest = _prepare(f"sketchy{split}", tree.root, tmp_path / "out", layout=layout)
    assert _counts(manifest) == tree.counts
    assert (("test_seen", "sketch") in _counts(manifest)) == (layout == "sake")
    frame = manifest.frame
    assert set(frame.loc[frame["split"] == "test_unseen", "category"]) == set(tree.unseen)
    assert set(frame.loc[frame["split"] == "train", "category"]) == set(tree.seen)
    assert manifest.extra["split_dir"] == split_dir
    for row in frame.sample(5, random_state=0).itertuples():
        assert manifest.resolve(row.path).is_file()
        assert row.content_hash == file_sha256(tree.root / row.path)


def test_sketchy_instance_ids_link_sketches_and_both_photo_copies(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, "sake")
    frame = _prepare("sketchy21", tree.root, tmp_path / "out", layout="sake").frame.set_index("path")
    assert frame.loc["256x256/sketch/tx_000000000000_ready/ape/n02000000_100-2.png", "instance_id"] == \
        "ape/n02000000_100"
    assert frame.loc["256x256/photo/tx_000000000000_ready/bat/n02000003_101.jpg", "instance_id"] == "bat/n02000003_101"
    assert frame.loc["EXTEND_image_sketchy_ready/bat/n02000003_101.jpg", "instance_id"] == "bat/n02000003_101"
    ext = frame[frame.index.str.contains("/ext_")]
    assert len(ext) == 5 and ext["instance_id"].isna().all()
    sketches = frame[frame["domain"] == "sketch"]
    assert sketches["instance_id"].notna().all()
    assert set(sketches["instance_id"]) <= set(frame.loc[frame["domain"] == "photo", "instance_id"].dropna())


def test_duplicate_photos_are_kept_by_default_and_counted(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, "zse")
    _prepare("sketchy21", tree.root, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest.extra["duplicate_photos"] == tree.duplicates == 10
    assert manifest.extra["dropped_duplicate_photos"] == 0
    photos = manifest.select(domain="photo")
    assert photos["instance_id"].dropna().duplicated().sum() == 10
    assert _counts(manifest)[("test_unseen", "photo")] == 10


def test_drop_duplicate_photos_keeps_the_original_copy(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, "zse")
    for name in ("all_photo_filelist_train.txt", "all_photo_filelist_zero.txt"):  # EXTEND copies listed first
        lines = (tree.split_dir / name).read_text().splitlines()
        (tree.split_dir / name).write_text("\n".join(reversed(lines)) + "\n")
    manifest = _prepare("sketchy21", tree.root, tmp_path / "out", drop_duplicate_photos=True)
    counts = _counts(manifest)
    assert counts[("train", "photo")] == 15 - 6 and counts[("test_unseen", "photo")] == 10 - 4
    assert counts[("train", "sketch")] == tree.counts[("train", "sketch")]
    photos = manifest.select(domain="photo")
    assert not photos["instance_id"].dropna().duplicated().any()
    kept = photos[photos["instance_id"].notna()]
    assert kept["path"].str.startswith("256x256/photo/").all()
    assert photos["path"].str.contains("/ext_").sum() == 5
    assert manifest.extra["duplicate_photos"] == 10 and manifest.extra["dropped_duplicate_photos"] == 10


def test_layout_names_the_21_split_folder_and_hints_at_the_trap(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, "sake")  # SAKE: zeroshot2
    with pytest.raises(DatasetError) as error:
        _prepare("sketchy21", tree.root, tmp_path / "out", layout="zse")
    message = str(error.value)
    assert str(tree.root / "zeroshot0" / "cname_cid.txt") in message
    assert "'zeroshot2'" in message and "layout='sake'" in message
    assert "256x256/sketch/tx_000000000000_ready/<class>/<imagenet_id>-<k>.png" in message


def test_lists_of_another_split_are_rejected(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 25, "zse")  # zeroshot1 = the 25-class split
    with pytest.raises(DatasetError, match=r"cname_cid_zero\.txt names class\(es\) \['cup', 'teddy_bear'\]"):
        _prepare("sketchy21", tree.root, tmp_path / "out", split_dir="zeroshot1")
    manifest = _prepare("sketchy21", tree.root, tmp_path / "out", split_dir="zeroshot1", check_classes=False)
    assert len(manifest.frame) == sum(tree.counts.values())


def test_categories_come_from_the_label_ids_not_line_order(tmp_path):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin", "sake")
    # Swap the two seen ids (lines keep their order) in cname_cid.txt and in every list that indexes it.
    (tree.split_dir / "cname_cid.txt").write_text("airplane 1\nalarm clock 0\n")
    for name in ("png_ready_filelist_train.txt", "png_ready_filelist_test.txt",
                 "ImageResized_ready_filelist_train.txt"):
        lines = (tree.split_dir / name).read_text().splitlines()
        swapped = [re.sub(r" (\d+)$", lambda m: f" {1 - int(m.group(1))}", line) for line in lines]
        (tree.split_dir / name).write_text("\n".join(swapped) + "\n")
    manifest = _prepare("tuberlin30", tree.root, tmp_path / "out", layout="sake")
    folder = manifest.frame["path"].str.split("/").str[1]
    assert (manifest.frame["category"] == folder).all()
    assert "alarm clock" in set(manifest.frame["category"]) and "hot air balloon" in set(manifest.frame["category"])
    assert manifest.frame["instance_id"].isna().all()


@pytest.mark.parametrize("layout", ["zse", "sake"])
def test_tuberlin_held_out_sketches_only_with_sake_lists(tmp_path, layout):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin", layout)
    manifest = _prepare("tuberlin30", tree.root, tmp_path / "out", layout=layout)
    assert _counts(manifest) == tree.counts
    assert _counts(manifest)[("test_seen", "sketch")] == (2 if layout == "sake" else 0)


def test_quickdraw_paths_with_spaces_and_no_sake_layout(tmp_path):
    tree = make_quickdraw_tree(tmp_path / "QuickDraw")
    manifest = _prepare("quickdraw30", tree.root, tmp_path / "out")
    assert _counts(manifest) == tree.counts
    unseen_photos = manifest.select(split="test_unseen", domain="photo")
    assert "images/palm tree/image 0001.jpg" in set(unseen_photos["path"])
    assert set(unseen_photos["category"]) == {"palm tree", "bat"}
    with pytest.raises(DatasetError, match="SAKE/DSN publish no QuickDraw lists"):
        create("quickdraw30", root=tree.root, layout="sake")


def test_folders_mode_splits_by_the_shipped_unseen_list(tmp_path):
    unseen = shipped_class_list("sketchy21_unseen.txt")
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, unseen=unseen, with_lists=False)
    params = {"split_source": "folders", "held_out_sketches_per_class": 1, "seed": 3}
    manifest = _prepare("sketchy21", tree.root, tmp_path / "a", **params)
    counts = _counts(manifest)
    seen_n, unseen_n = 3, 21
    assert counts[("test_unseen", "sketch")] == unseen_n * 4 and counts[("test_unseen", "photo")] == unseen_n * 5
    assert counts[("test_seen", "sketch")] == seen_n and counts[("train", "sketch")] == seen_n * 3
    assert counts[("train", "photo")] == seen_n * 5 and ("test_seen", "photo") not in counts
    assert set(manifest.select(split="test_unseen")["category"]) == set(unseen)
    assert manifest.extra["duplicate_photos"] == 24 * 2
    again = _prepare("sketchy21", tree.root, tmp_path / "b", **params)
    assert again.frame.equals(manifest.frame)
    held = {seed: frozenset(_prepare("sketchy21", tree.root, tmp_path / f"s{seed}", **{**params, "seed": seed})
                            .select(split="test_seen")["path"]) for seed in range(4)}
    assert len(set(held.values())) > 1


def test_folders_mode_holds_out_at_most_half_a_small_class(tmp_path):
    tree = make_quickdraw_tree(tmp_path / "QuickDraw", unseen=shipped_class_list("quickdraw30_unseen.txt"),
                               sketches_per_class=4, photos_per_class=1, with_lists=False)
    manifest = _prepare("quickdraw30", tree.root, tmp_path / "out", split_source="folders")  # default 50
    counts = _counts(manifest)
    assert counts[("test_seen", "sketch")] == 2 * 2 and counts[("train", "sketch")] == 2 * 2


def test_folders_mode_matches_class_names_loosely(tmp_path):
    unseen = shipped_class_list("quickdraw30_unseen.txt")
    tree = make_quickdraw_tree(tmp_path / "QuickDraw", unseen=unseen, folder=lambda c: c.replace(" ", "_").title(),
                               with_lists=False)
    manifest = _prepare("quickdraw30", tree.root, tmp_path / "out", split_source="folders")
    unseen_categories = set(manifest.select(split="test_unseen")["category"])
    assert "Palm_Tree" in unseen_categories and "Fire_Hydrant" in unseen_categories
    assert len(unseen_categories) == 30
    assert set(manifest.select(split="train")["category"]) == {"Alarm_Clock", "Cruise_Ship"}


def test_folders_mode_with_a_user_unseen_list(tmp_path):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin", with_lists=False)
    override = tmp_path / "my_unseen.txt"
    override.write_text("Hot_Air_Balloon\nT Shirt\n")
    manifest = _prepare("tuberlin30", tree.root, tmp_path / "out", split_source="folders",
                        unseen_classes_file=str(override))
    assert set(manifest.select(split="test_unseen")["category"]) == {"hot air balloon", "t-shirt"}
    assert manifest.extra["unseen_class_list"] == str(override)


def test_folders_mode_names_unseen_classes_without_a_folder(tmp_path):
    tree = make_quickdraw_tree(tmp_path / "QuickDraw", with_lists=False)  # only 2 of the 30 unseen classes
    with pytest.raises(DatasetError) as error:
        _prepare("quickdraw30", tree.root, tmp_path / "out", split_source="folders")
    message = str(error.value)
    assert str(tree.root / "sketches") in message and "'feather'" in message and "quickdraw30_unseen.txt" in message
    assert "'palm tree'" not in message.split("Class folders found")[0]


def test_folders_mode_names_a_missing_image_folder(tmp_path):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin", with_lists=False)
    os.rename(tree.root / "ImageResized_ready", tree.root / "photos")
    with pytest.raises(DatasetError) as error:
        _prepare("tuberlin30", tree.root, tmp_path / "out", split_source="folders")
    assert str(tree.root / "ImageResized_ready") in str(error.value)
    assert "ImageResized_ready/<class>/<name>.JPEG" in str(error.value)


def test_missing_root_prints_the_expected_tree(tmp_path):
    root = tmp_path / "nowhere" / "Sketchy"
    with pytest.raises(DatasetError) as error:
        _prepare("sketchy25", root, tmp_path / "out")
    message = str(error.value)
    assert str(root) in message and "zeroshot1/" in message
    assert "EXTEND_image_sketchy_ready/<class>" in message and "all_photo_filelist_{train,zero}.txt" in message


def test_missing_list_file_is_named(tmp_path):
    tree = make_quickdraw_tree(tmp_path / "QuickDraw")
    (tree.split_dir / "all_photo_zero.txt").unlink()
    with pytest.raises(DatasetError) as error:
        _prepare("quickdraw30", tree.root, tmp_path / "out")
    assert str(tree.split_dir / "all_photo_zero.txt") in str(error.value)
    assert str(tree.split_dir / "sketch_zero.txt") not in str(error.value)


def _append(path: Path, line: str) -> int:
    """Append a line to a list file; returns its 1-based line number."""
    lines = path.read_text().splitlines() + [line]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_malformed_list_line_names_file_and_line(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 25, "sake")
    list_file = tree.split_dir / "sketch_tx_000000000000_ready_filelist_train.txt"
    number = _append(list_file, "256x256/sketch/tx_000000000000_ready/ape/n02000000_100-1.png seven")
    with pytest.raises(DatasetError, match=re.escape(f"{list_file}:{number}: expected '<relative path> <integer")):
        _prepare("sketchy25", tree.root, tmp_path / "out", layout="sake")


def test_out_of_range_label_names_file_line_and_class_file(tmp_path):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin")
    list_file = tree.split_dir / "png_ready_filelist_zero.txt"
    number = _append(list_file, "png_ready/hot air balloon/1.png 2")  # cname_cid_zero has ids 0..1
    with pytest.raises(DatasetError) as error:
        _prepare("tuberlin30", tree.root, tmp_path / "out")
    assert f"{list_file}:{number}: label 2 is not an id in cname_cid_zero.txt (ids 0..1)" in str(error.value)


def test_missing_listed_files_are_reported_together(tmp_path):
    tree = make_sketchy_tree(tmp_path / "Sketchy", 21, "zse")
    gone = ["256x256/sketch/tx_000000000000_ready/bat/n02000003_100-1.png", "EXTEND_image_sketchy_ready/door/ext_5.jpg"]
    for relative in gone:
        (tree.root / relative).unlink()
    with pytest.raises(DatasetError) as error:
        _prepare("sketchy21", tree.root, tmp_path / "out")
    message = str(error.value)
    assert "(2 problem(s))" in message and str(tree.root) in message
    sketch_list = tree.split_dir / "sketch_tx_000000000000_ready_filelist_zero.txt"
    line = tree.lists[sketch_list.name].index(f"{gone[0]} 0") + 1
    assert f"{sketch_list}:{line}: {gone[0]}" in message
    assert "all_photo_filelist_zero.txt:" in message and gone[1] in message


def test_missing_file_report_is_capped(tmp_path):
    tree = make_quickdraw_tree(tmp_path / "QuickDraw")
    for path in sorted((tree.root / "sketches").rglob("*.png"))[:5]:
        path.unlink()
    with pytest.raises(DatasetError, match=r"\(5 problem\(s\)\)[\s\S]*\.\.\. and 3 more"):
        _prepare("quickdraw30", tree.root, tmp_path / "out", max_reported=2)


def test_bad_parameters_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown layout 'doodle'"):
        create("sketchy21", root=tmp_path, layout="doodle")
    with pytest.raises(DatasetError, match="split_source"):
        create("tuberlin30", root=tmp_path, split_source="csv")
    with pytest.raises(ConfigError, match=r"prepare.tuberlin30: unknown key\(s\) \['drop_duplicate_photos'\]"):
        create("tuberlin30", root=tmp_path, drop_duplicate_photos=True)  # Sketchy-only option: a config mistake


def test_relative_root_is_stored_relative_to_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_quickdraw_tree(Path("data/raw/QuickDraw"))
    _prepare("quickdraw30", Path("data/raw/QuickDraw"), Path("data/prepared/quickdraw30"))
    meta = json.loads(pq.read_schema("data/prepared/quickdraw30/manifest.parquet").metadata[b"sbir"])
    assert meta["image_root"] == os.path.join("..", "..", "raw", "QuickDraw")
    manifest = read_manifest(tmp_path / "data/prepared/quickdraw30")
    assert manifest.image_root == (tmp_path / "data/raw/QuickDraw").resolve()
    assert all(manifest.resolve(p).is_file() for p in manifest.frame["path"])


def test_progress_bar_reports_hashing(tmp_path, capsys):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin")
    create("tuberlin30", root=tree.root).prepare(tmp_path / "out", progress=True)
    assert "tuberlin30: hashing" in capsys.readouterr().err


def test_describe_gives_split_origin_and_expected_counts(tmp_path):
    zse, sake = create("sketchy21", root=tmp_path), create("sketchy21", root=tmp_path, layout="sake")
    facts = zse.describe()
    assert facts["split_dir"] == "zeroshot0" and sake.describe()["split_dir"] == "zeroshot2"
    assert facts["expected_counts"]["train"] == {"classes": 104, "sketch": 57587, "photo": 72949}
    assert facts["expected_counts"]["test_unseen"]["photo"] == 12553
    assert "Yelamarthi" in facts["split_origin"] and len(facts["unseen_classes"]) == 21
    assert create("sketchy25", root=tmp_path).describe()["expected_counts"]["test_unseen"]["sketch"] == 15229
    assert create("tuberlin30", root=tmp_path).describe()["expected_counts"]["test_unseen"]["photo"] == 27989
    assert create("quickdraw30", root=tmp_path).describe()["expected_counts"]["test_unseen"]["sketch"] == 92291


def test_empty_zero_shot_split_is_an_error(tmp_path):
    tree = make_tuberlin_tree(tmp_path / "TUBerlin")
    for name in ("png_ready_filelist_zero.txt", "ImageResized_ready_filelist_zero.txt"):
        (tree.split_dir / name).write_text("")
    with pytest.raises(DatasetError, match="tuberlin30: no unseen-class images found"):
        _prepare("tuberlin30", tree.root, tmp_path / "out")
