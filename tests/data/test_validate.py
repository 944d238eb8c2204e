"""The data gate catches each kind of bad data and names the offending files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sbir.manifest import read_manifest, write_manifest
from stages.validate import ValidateParams, validate_dataset
from helpers import REPO_ROOT, config, make_image_dataset


def _failed(report: dict) -> dict[str, list[str]]:
    return {check["check"]: check["offending"] for check in report["checks"] if not check["success"]}


def _rewrite(root: Path, change) -> None:
    manifest = read_manifest(root)
    write_manifest(change(manifest.frame.copy()), root, dataset=manifest.dataset, image_root=".")


def test_clean_dataset_passes(tiny_dataset: Path) -> None:
    report = validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False)
    assert report["success"], _failed(report)
    assert len(report["checks"]) >= 18 and report["images"] == 18


def test_truncated_png_is_caught_and_named(tiny_dataset: Path) -> None:
    victim = tiny_dataset / "images/photo/apple/apple-1.png"
    victim.write_bytes(victim.read_bytes()[:120])
    report = validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False)
    assert _failed(report) == {"files: decode": ["images/photo/apple/apple-1.png"]}
    assert "images/photo/apple/apple-1.png" in [e["path"] for e in report["decode_errors"]]


def test_missing_file_is_caught_and_named(tiny_dataset: Path) -> None:
    (tiny_dataset / "images/sketch/boat/boat-2.png").unlink()
    failed = _failed(validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False))
    assert failed["files: exist"] == ["images/sketch/boat/boat-2.png"]
    assert failed["files: decode"] == ["images/sketch/boat/boat-2.png"]


def test_leaked_duplicate_between_train_and_test_is_caught(tiny_dataset: Path) -> None:
    train_photo = tiny_dataset / "images/photo/apple/apple-0.png"
    shutil.copy(train_photo, tiny_dataset / "images/photo/cat/cat-0.png")
    manifest = read_manifest(tiny_dataset)
    leaked_hash = manifest.frame.loc[manifest.frame["path"] == "images/photo/apple/apple-0.png", "content_hash"]

    def leak(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame["path"] == "images/photo/cat/cat-0.png", "content_hash"] = leaked_hash.iloc[0]
        return frame

    _rewrite(tiny_dataset, leak)
    failed = _failed(validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False))
    assert sorted(failed["splits: no identical image in train and test"]) == [
        "images/photo/apple/apple-0.png", "images/photo/cat/cat-0.png"]


def test_overlapping_splits_are_caught(tiny_dataset: Path) -> None:
    def overlap(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame["path"].str.contains("cat-0"), "split"] = "train"  # cat is the unseen category
        return frame

    _rewrite(tiny_dataset, overlap)
    failed = _failed(validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False))
    assert failed["splits: seen and unseen categories disjoint"] == ["cat"]
    assert "splits: no identical image in train and test" not in failed


def test_broken_instance_link_small_category_and_bad_mode(tmp_path: Path) -> None:
    root = make_image_dataset(tmp_path / "d", {"apple": "train", "cat": "test_unseen"}, per_category=3)

    def damage(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame["path"] == "images/sketch/apple/apple-2.png", "instance_id"] = "nowhere"
        return frame[frame["path"] != "images/photo/cat/cat-2.png"]  # leaves cat with 2 photos < 3

    _rewrite(root, damage)
    from PIL import Image
    Image.new("I;16", (48, 48)).save(root / "images/photo/apple/apple-0.png")
    failed = _failed(validate_dataset(root, config(ValidateParams, "validate"), progress=False))
    # the retargeted sketch, and the sketch whose photo was removed
    assert sorted(failed["links: sketch instance resolves to a photo"]) == [
        "images/sketch/apple/apple-2.png", "images/sketch/cat/cat-2.png"]
    assert failed["counts: minimum images per category and domain"] == ["test_unseen/cat/photo"]
    assert failed["images: photo modes"] == ["images/photo/apple/apple-0.png"]


def test_link_to_a_photo_of_another_category_is_caught(tiny_dataset: Path) -> None:
    def relink(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame["path"] == "images/sketch/apple/apple-0.png", "instance_id"] = "boat-0"
        return frame

    _rewrite(tiny_dataset, relink)
    failed = _failed(validate_dataset(tiny_dataset, config(ValidateParams, "validate"), progress=False))
    assert failed == {"links: sketch instance resolves to a photo": ["images/sketch/apple/apple-0.png"]}


def test_image_size_limits(tiny_dataset: Path) -> None:
    failed = _failed(validate_dataset(tiny_dataset, config(ValidateParams, "validate", min_side=64), progress=False))
    assert len(failed["images: width within limits"]) == 18


@pytest.mark.slow
def test_cli_exits_nonzero_and_writes_report(tiny_dataset: Path, tmp_path: Path) -> None:
    (tiny_dataset / "images/photo/apple/apple-1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report_path = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "stages.validate", "--dataset", "tiny", "--no-progress",
                             "--params", str(REPO_ROOT / "params.yaml"), "--prepared", str(tiny_dataset),
                             "--report", str(report_path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "files: decode" in result.stderr and "images/photo/apple/apple-1.png" in result.stderr
    assert json.loads(report_path.read_text())["success"] is False
