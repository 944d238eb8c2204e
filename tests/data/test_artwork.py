"""The artwork styles: each installed source found and matched by code points or names (FE0F, leading zeros,
aliases, Unicode names), the same emoji, categories and splits as OpenMoji-ZS, one domain per set, held-out styles
kept out of training, the data gate's leaks screened, attribution kept, and clear errors when artwork is missing."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sbir.datasets import DatasetError, create
from sbir.datasets.artwork import HELD_OUT, screened
from sbir.datasets.artwork_sources import SOURCES, IconifySet, emoji_names, name_slug, sequence_key
from sbir.datasets.openmoji import emoji_test_file
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


TWEMOJI = SOURCES["twemoji"]
SVG_DIR_ENV = TWEMOJI.env_var


def test_index_prefers_the_file_named_without_fe0f(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for stem in ("2764-fe0f", "2764", "1f600", "readme"):
        (tmp_path / f"{stem}.svg").write_text("<svg/>")
    monkeypatch.setenv(SVG_DIR_ENV, str(tmp_path))
    index = TWEMOJI.index({})
    assert index[(0x2764,)].name == "2764.svg" and index[(0x1F600,)].name == "1f600.svg" and len(index) == 2


def test_installed_package_matches_openmoji_names() -> None:
    index = TWEMOJI.index({})
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
    manifest = create("twemoji", **params_section("prepare.twemoji", min_train_per_category=1)).prepare(
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


def test_held_out_style_only_unseen_and_photo_only_validation(project: Path) -> None:
    out = project / "data/prepared/fluent_3d"
    manifest = create("fluent_3d", **params_section("prepare.fluent_3d", image_size=24)).prepare(out, progress=False)
    assert set(manifest.frame["split"]) == {"test_unseen"} and manifest.extra["params"]["image_size"] == 24
    assert manifest.extra["held_out"] and "MIT" == manifest.extra["license"]
    params = config(ValidateParams, "validate", min_images_per_category={"train": 1, "test_seen": 1, "test_unseen": 1}, min_side=16)
    report = validate_dataset(out, params, progress=False)
    assert report["success"], [c for c in report["checks"] if not c["success"]]
    assert report["domains"] == ["photo"]
    # a photo-only gallery may not hold sketches
    frame = manifest.frame.copy()
    frame.loc[0, "domain"] = "sketch"
    write_manifest(frame, out, dataset="fluent_3d", extra=manifest.extra)
    failed = {c["check"] for c in validate_dataset(out, params, progress=False)["checks"] if not c["success"]}
    assert "schema: domain values" in failed


def test_missing_svg_folder_says_to_run_make_setup(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SVG_DIR_ENV, str(project / "nowhere"))
    with pytest.raises(DatasetError, match=r"nowhere.*run `make setup`"):
        create("twemoji", **params_section("prepare.twemoji")).prepare(project / "data/prepared/twemoji", progress=False)
    monkeypatch.setenv(SVG_DIR_ENV, str(project))  # a folder without SVGs
    with pytest.raises(DatasetError, match="make setup"):
        TWEMOJI.folder()


def test_bad_parameters_and_missing_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="splits must be"):
        create("twemoji", **params_section("prepare.twemoji", splits=["holdout"]))
    with pytest.raises(DatasetError, match="margin"):
        create("twemoji", **params_section("prepare.twemoji", margin=0.5))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="prepared 'openmoji_zs'.*prepare stage"):
        create("twemoji", **params_section("prepare.twemoji")).prepare(tmp_path / "out", progress=False)
    for name in HELD_OUT:  # never trained on: a held-out style refuses training splits
        with pytest.raises(DatasetError, match="held-out style"):
            create(name, **params_section(f"prepare.{name}", splits=["train", "test_unseen"]))


# One emoji each source must have, found the way that source names it, and what its rendering must look like.
SOURCE_EXAMPLES = {
    "twemoji": ("1F600", "RGB"),
    "fluent_flat": ("1F600", "RGB"),          # chars.json: code points -> icon name
    "fluent_3d": ("0023-FE0F-20E3", "RGB"),   # WebP files named with FE0F, zero-padded
    "fluent_hc": ("1F40C", "L"),
    "emojione_mono": ("1F63E", "L"),          # no code point map: the Unicode name "POUTING CAT FACE"
    "symbola": ("1F40C", "L"),                # a font glyph (single code point)
}


@pytest.mark.parametrize("name", sorted(SOURCE_EXAMPLES))
def test_each_installed_source_finds_and_draws_its_emoji(name: str) -> None:
    source = SOURCES[name]
    hexcode, mode = SOURCE_EXAMPLES[name]
    index = source.index(emoji_names(emoji_test_file()))
    image = source.render(index[sequence_key(hexcode)], 48, source.margin)
    assert image.mode == mode and image.size == (48, 48) and mode == ("RGB" if source.domain == "photo" else "L")
    pixels = np.asarray(image.convert("L"))
    assert pixels[0, 0] == 255 and pixels.min() < 100  # white paper around dark ink or colour
    assert source.license and source.attribution and source.version() != "unknown"


def test_names_and_aliases_of_a_set_named_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert name_slug("keycap: *") == "keycap" and name_slug("Santa Claus") == "santa-claus"
    assert name_slug("people hugging’s") == "people-huggings"
    body = '<path fill="currentColor" d="M0 0h8v8H0z"/>'
    (tmp_path / "icons.json").write_text(json.dumps({"width": 8, "height": 8, "icons": {"pouting-cat-face": {"body": body}},
                                                     "aliases": {"angry-cat": {"parent": "pouting-cat-face"}}}))
    monkeypatch.setenv("ZSSBIR_TEST_SET_DIR", str(tmp_path))
    test_set = IconifySet("test_set", "nowhere", "MIT", "test", "sketch", 0.0, env="ZSSBIR_TEST_SET_DIR")
    index = test_set.index({(0x1F63E,): ["pouting cat", "POUTING CAT FACE"], (0x1F63F,): ["angry cat"],
                            (0x1F600,): ["grinning face"]})
    assert set(index) == {(0x1F63E,), (0x1F63F,)} and index[(0x1F63F,)][0] == "pouting-cat-face"
    image = test_set.render(index[(0x1F63E,)], 16, 0.0)
    assert np.asarray(image).max() == 0  # currentColor drawn as black ink


def test_symbola_has_no_glyph_for_a_sequence() -> None:
    index = SOURCES["symbola"].index(emoji_names(emoji_test_file()))
    assert (0x1F40C,) in index and all(len(key) == 1 for key in index)


def test_screening_leaves_out_training_leaks_and_thin_categories(tmp_path: Path) -> None:
    rows = [("a", "t1", "train", "h1"), ("a", "t2", "train", "h2"), ("a", "t3", "train", "same"),
            ("b", "u1", "test_unseen", "same"), ("c", "t4", "train", "h4")]
    frame = pd.DataFrame([{"path": f"{i}.png", "domain": "sketch", "category": c, "instance_id": i, "split": s,
                           "content_hash": h} for c, i, s, h in rows])
    for path in frame["path"]:
        (tmp_path / path).write_bytes(b"x")
    kept, left_out = screened(frame, tmp_path, min_train_per_category=2)
    assert set(kept["instance_id"]) == {"t1", "t2", "u1"}  # the test row of the identical pair stays
    assert set(left_out) == {"t3", "t4"} and "identical" in left_out["t3"] and "< 2" in left_out["t4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.png", "t2.png", "u1.png"]


def test_sketch_set_links_resolve_against_its_source_photos(project: Path) -> None:
    out = project / "data/prepared/fluent_hc"
    manifest = create("fluent_hc", **params_section("prepare.fluent_hc", min_train_per_category=1)).prepare(
        out, progress=False)
    assert set(manifest.frame["domain"]) == {"sketch"} and manifest.extra["domains"] == ["sketch"]
    params = config(ValidateParams, "validate", min_images_per_category={"train": 1, "test_seen": 1, "test_unseen": 1},
                    min_side=16)
    report = validate_dataset(out, params, progress=False)
    assert report["success"], [c for c in report["checks"] if not c["success"]]
    frame = manifest.frame.copy()
    frame.loc[0, "instance_id"] = "FFFFF"  # a sketch of an emoji the source has no photo of
    write_manifest(frame, out, dataset="fluent_hc", extra=manifest.extra)
    failed = {c["check"] for c in validate_dataset(out, params, progress=False)["checks"] if not c["success"]}
    assert failed == {"links: sketch instance resolves to a photo"}
