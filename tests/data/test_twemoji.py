"""The Twemoji gallery: file-name matching (FE0F, leading zeros), the same emoji, categories and splits as
OpenMoji-ZS, photos only, attribution kept, and a clear error when the installed SVGs are missing."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from sbir.datasets import DatasetError, create
from sbir.datasets.twemoji import SVG_DIR_ENV, sequence_key, twemoji_index, twemoji_svg_dir
from sbir.manifest import write_manifest
from stages.validate import ValidateParams, validate_dataset
from helpers import config, params_section

# OpenMoji hexcode -> the Twemoji file it must match: FE0F dropped on either side, leading zeros, plain emoji
EXPECTED_FILES = {
    "0023-FE0F-20E3": "23-20e3.svg",                     # keycap: OpenMoji keeps FE0F and zero-pads
    "00A9": "a9.svg",
    "1F441-FE0F-200D-1F5E8-FE0F": "1f441-200d-1f5e8.svg",  # Twemoji drops both FE0F
    "1F9D4-200D-2642-FE0F": "1f9d4-200d-2642-fe0f.svg",    # Twemoji keeps it
    "2764-FE0F-200D-1F525": "2764-fe0f-200d-1f525.svg",
    "1F600": "1f600.svg",
}
NOT_IN_TWEMOJI = "1FAEA"  # face with bags under eyes (Emoji 16.0): newer than the Twemoji release


def test_sequence_keys_ignore_fe0f_case_and_zero_padding() -> None:
    assert sequence_key("0023-FE0F-20E3") == sequence_key("23-20e3") == (0x23, 0x20E3)
    assert sequence_key("2764-FE0F") == sequence_key("2764") == (0x2764,)
    assert sequence_key("not-hex") is None and sequence_key("FE0F") is None


def test_index_prefers_the_file_named_without_fe0f(tmp_path: Path) -> None:
    for stem in ("2764-fe0f", "2764", "1f600", "readme"):
        (tmp_path / f"{stem}.svg").write_text("<svg/>")
    index = twemoji_index(tmp_path)
    assert index[(0x2764,)].name == "2764.svg" and index[(0x1F600,)].name == "1f600.svg" and len(index) == 2


def test_installed_package_matches_openmoji_names() -> None:
    index = twemoji_index(twemoji_svg_dir())
    assert {code: index[sequence_key(code)].name for code in EXPECTED_FILES} == EXPECTED_FILES
    assert sequence_key(NOT_IN_TWEMOJI) not in index


@pytest.fixture(scope="module")
def handful() -> pd.DataFrame:
    """A few OpenMoji-ZS emoji with their real categories and splits (no rendering needed)."""
    assigned = {item.hexcode: (item, split) for item, split in create("openmoji_zs", **params_section("prepare.openmoji_zs")).items_with_splits()}
    unseen_extra = [code for code, (_, split) in assigned.items() if split == "test_unseen"][:4]
    rows = [{"path": f"images/photo/x/{code}.png", "domain": "photo", "category": assigned[code][0].subgroup,
             "instance_id": code, "split": assigned[code][1], "content_hash": "0" * 64}
            for code in [*EXPECTED_FILES, NOT_IN_TWEMOJI, *unseen_extra]]
    return pd.DataFrame(rows).drop_duplicates("instance_id")


@pytest.fixture
def project(tmp_path: Path, handful: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a prepared 'openmoji_zs' of the handful (manifest only)."""
    sketches = handful.assign(domain="sketch", path=handful["path"].str.replace("photo", "sketch"))
    write_manifest(pd.concat([handful, sketches]), tmp_path / "data/prepared/openmoji_zs", dataset="openmoji_zs",
                   extra={"params": {"image_size": 32}})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_prepare_keeps_emoji_categories_and_splits_of_openmoji(project: Path, handful: pd.DataFrame) -> None:
    manifest = create("twemoji", **params_section("prepare.twemoji", splits=["train", "test_seen", "test_unseen"])).prepare(
        project / "data/prepared/twemoji", progress=False)
    frame = manifest.frame.set_index("instance_id")
    source = handful.set_index("instance_id")
    assert set(frame.index) == set(source.index) - {NOT_IN_TWEMOJI}
    assert (frame["category"] == source.loc[frame.index, "category"]).all()
    assert (frame["split"] == source.loc[frame.index, "split"]).all()
    assert set(frame["domain"]) == {"photo"} and frame["content_hash"].is_unique
    extra = manifest.extra
    assert extra["matched"] == len(frame) and list(extra["unmatched"]) == [NOT_IN_TWEMOJI]
    assert extra["domains"] == ["photo"] and extra["gallery_for"] == "openmoji_zs"
    assert extra["params"]["image_size"] == 32 and extra["package"].startswith("@twemoji/svg 15.")
    assert "Twemoji by Twitter/X and contributors" in extra["attribution"] and extra["license"] == "CC BY 4.0"
    card = (project / "data/prepared/twemoji/DATASET_CARD.md").read_text()
    assert "CC BY 4.0" in card and "unmatched: 1 (1FAEA)" in card
    with Image.open(manifest.resolve(frame["path"].iloc[0])) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
        assert image.getpixel((0, 0)) == (255, 255, 255)  # the margin: art scaled into the centre


def test_default_splits_only_unseen_and_photo_only_validation(project: Path) -> None:
    out = project / "data/prepared/twemoji"
    manifest = create("twemoji", **params_section("prepare.twemoji", image_size=24)).prepare(out, progress=False)
    assert set(manifest.frame["split"]) == {"test_unseen"} and manifest.extra["params"]["image_size"] == 24
    params = config(ValidateParams, "validate", min_images_per_category={"train": 1, "test_seen": 1, "test_unseen": 1}, min_side=16)
    report = validate_dataset(out, params, progress=False)
    assert report["success"], [c for c in report["checks"] if not c["success"]]
    assert report["domains"] == ["photo"]
    # a photo-only gallery may not hold sketches
    frame = manifest.frame.copy()
    frame.loc[0, "domain"] = "sketch"
    write_manifest(frame, out, dataset="twemoji", extra=manifest.extra)
    failed = {c["check"] for c in validate_dataset(out, params, progress=False)["checks"] if not c["success"]}
    assert "schema: domain values" in failed


def test_missing_svg_folder_says_to_run_make_setup(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SVG_DIR_ENV, str(project / "nowhere"))
    with pytest.raises(DatasetError, match=r"nowhere.*run `make setup`"):
        create("twemoji", **params_section("prepare.twemoji")).prepare(project / "data/prepared/twemoji", progress=False)
    with pytest.raises(DatasetError, match="make setup"):
        twemoji_svg_dir({SVG_DIR_ENV: str(project)})  # a folder without SVGs


def test_bad_parameters_and_missing_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="splits must be"):
        create("twemoji", **params_section("prepare.twemoji", splits=["holdout"]))
    with pytest.raises(DatasetError, match="margin"):
        create("twemoji", **params_section("prepare.twemoji", margin=0.5))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="prepared 'openmoji_zs'.*prepare stage"):
        create("twemoji", **params_section("prepare.twemoji")).prepare(tmp_path / "out", progress=False)
