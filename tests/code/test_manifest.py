from pathlib import Path

import pandas as pd
import pytest

from sbir.manifest import COLUMNS, ManifestError, file_sha256, read_manifest, write_manifest


def _frame(**overrides) -> pd.DataFrame:
    row = {"path": "a.png", "domain": "sketch", "category": "cat", "instance_id": None, "split": "train",
           "content_hash": "0" * 64}
    row.update(overrides)
    return pd.DataFrame([row])


def test_round_trip_keeps_rows_metadata_and_resolves_relative_root(tmp_path: Path) -> None:
    frame = pd.concat([_frame(), _frame(path="b c/d.jpg", domain="photo", instance_id="x", split="test_unseen")])
    write_manifest(frame, tmp_path / "out", dataset="demo", image_root="../images", extra={"k": 1})
    manifest = read_manifest(tmp_path / "out")
    assert manifest.dataset == "demo" and manifest.extra == {"k": 1}
    assert list(manifest.frame.columns) == list(COLUMNS)
    assert manifest.frame["path"].tolist() == ["a.png", "b c/d.jpg"]
    assert manifest.frame["instance_id"].isna().tolist() == [True, False]
    assert manifest.image_root == (tmp_path / "images").resolve()
    assert manifest.resolve("b c/d.jpg") == (tmp_path / "images" / "b c" / "d.jpg").resolve()
    assert len(manifest.select(split="test_unseen", domain="photo")) == 1


def test_absolute_root_is_kept(tmp_path: Path) -> None:
    write_manifest(_frame(), tmp_path, dataset="demo", image_root=tmp_path / "elsewhere")
    assert read_manifest(tmp_path / "manifest.parquet").image_root == tmp_path / "elsewhere"


@pytest.mark.parametrize("overrides, message", [
    ({"domain": "drawing"}, "column 'domain'"),
    ({"split": "val"}, "column 'split'"),
])
def test_bad_values_are_named(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        write_manifest(_frame(**overrides), tmp_path, dataset="demo")


def test_missing_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['content_hash'\]"):
        write_manifest(_frame().drop(columns="content_hash"), tmp_path, dataset="demo")


def test_missing_and_foreign_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest here"):
        read_manifest(tmp_path)
    _frame().to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(ManifestError, match="lacks the 'sbir' metadata"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.parquet").write_text("not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet"):
        read_manifest(tmp_path)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 9000  # spans several read chunks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f", chunk_size=4096) == hashlib.sha256(data).hexdigest()
