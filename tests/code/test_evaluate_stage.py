"""The evaluate stage's wiring: what it embeds, excludes, writes and reports."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.interface import RetrievalModel
from models.registry import create_model
from sbir.manifest import read_manifest
from stages.evaluate import EvaluateParams, evaluate_model, normalise_category


class Oracle(RetrievalModel):
    """Knows each image's category (by pixel hash): a perfect category-level retriever."""

    def __init__(self, manifest) -> None:
        self.lookup = {}
        categories = sorted(manifest.frame["category"].unique())
        for path, category in zip(manifest.frame["path"], manifest.frame["category"]):
            with Image.open(manifest.resolve(path)) as image:
                self.lookup[hashlib.sha1(image.tobytes()).hexdigest()] = categories.index(category)
        self.embedding_dim = len(categories)
        self.name = "oracle"

    def _encode(self, images) -> np.ndarray:
        out = np.zeros((len(images), self.embedding_dim), dtype=np.float32)
        for row, image in enumerate(images):
            out[row, self.lookup[hashlib.sha1(image.tobytes()).hexdigest()]] = 1
        return out

    encode_sketches = encode_photos = _encode


@pytest.fixture(scope="module")
def manifest(tiny_openmoji: Path):
    return read_manifest(tiny_openmoji)


def test_oracle_scores_perfect_category_metrics_and_outputs_are_written(manifest, tmp_path: Path) -> None:
    document = evaluate_model(Oracle(manifest), manifest, EvaluateParams(grid_queries=3, grid_top_k=4),
                              tmp_path, progress=False)
    zero_shot = document["zero_shot"]
    unseen = manifest.select(split="test_unseen")
    assert zero_shot["n_queries"] == (unseen["domain"] == "sketch").sum()
    assert zero_shot["n_gallery"] == (unseen["domain"] == "photo").sum()
    for key in ("map_all/sklearn/query", "map_all/voc/class", "map_200/sake/query", "preset/sake/map_all"):
        assert zero_shot[key] == pytest.approx(1.0)
    # all photos of a category tie for the oracle; ties keep gallery order, so a sketch's own photo is ranked
    # first exactly when it is the first photo of its category in the manifest
    photos = unseen[unseen["domain"] == "photo"]
    first = set(photos.groupby("category")["instance_id"].first())
    sketches = unseen[unseen["domain"] == "sketch"]
    assert zero_shot["fg/acc@1/category"] == pytest.approx(sketches["instance_id"].isin(first).mean())
    assert "generalised" in document
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"metrics.json", "pr.csv", "pk.csv", "per_category.csv", "grid.png"}
    assert json.loads((tmp_path / "metrics.json").read_text())["zero_shot"] == zero_shot
    pr = pd.read_csv(tmp_path / "pr.csv")
    assert np.allclose(pr["precision"], 1.0)
    table = pd.read_csv(tmp_path / "per_category.csv")
    assert set(table["category"]) == set(unseen["category"])
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.width == 5 * (96 + 4)  # query + top 4


def test_hog_beats_random_on_openmoji(manifest, tmp_path: Path) -> None:
    params = EvaluateParams(generalised=False, grid_queries=2)
    hog = evaluate_model(create_model("baseline_hog"), manifest, params, tmp_path / "h", progress=False)
    rnd = evaluate_model(create_model("baseline_random"), manifest, params, tmp_path / "r", progress=False)
    assert hog["zero_shot"]["map_all/sklearn/query"] > rnd["zero_shot"]["map_all/sklearn/query"]
    assert hog["zero_shot"]["fg/acc@1/gallery"] > rnd["zero_shot"]["fg/acc@1/gallery"]


def test_cli_rejects_bad_params_with_exit_code_2(manifest, tmp_path: Path, monkeypatch, capsys) -> None:
    from stages.evaluate import main

    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/openmoji_zs").symlink_to(manifest.image_root)
    monkeypatch.chdir(tmp_path)
    cases = {"protocols: [nonsense]": "unknown protocol", "ties: maybe": "ties must be",
             "baselines: {baseline_hog: {colour: 1}}": "colour"}
    for line, message in cases.items():
        (tmp_path / "params.yaml").write_text(f"evaluate:\n  {line}\n  baselines: {{baseline_hog: {{}}}}\n"
                                              if "baselines" not in line else f"evaluate:\n  {line}\n")
        assert main(["--model", "baseline_hog", "--no-progress"]) == 2
        assert message in capsys.readouterr().err


def test_cross_dataset_excludes_and_reports_trained_categories(manifest, tmp_path: Path) -> None:
    unseen = sorted(manifest.select(split="test_unseen")["category"].unique())
    trained = {"dataset": "other", "train_categories": [unseen[0].upper().replace("-", " "), "zebra"]}
    document = evaluate_model(create_model("baseline_hog"), manifest, EvaluateParams(generalised=False), tmp_path,
                              trained, progress=False)
    assert document["cross_dataset"] == {"trained_on": "other",
                                         "trained_categories_in_test": [normalise_category(unseen[0])],
                                         "excluded": [normalise_category(unseen[0])]}
    assert document["zero_shot"]["n_classes"] == len(unseen) - 1
    kept = evaluate_model(create_model("baseline_hog"), manifest,
                          EvaluateParams(generalised=False, exclude_trained_categories=False), tmp_path / "k",
                          trained, progress=False)
    assert kept["zero_shot"]["n_classes"] == len(unseen)
