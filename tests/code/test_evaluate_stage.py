"""The evaluate stage's wiring: what it embeds, excludes, writes and reports."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import torch

from models.data import load_image
from models.embed import embed_dataset
from models.interface import Preprocess, RetrievalModel
from models.pair_ranking import score_every_pair
from models.registry import create_model
from sbir.categories import normalize_category
from sbir.embeddings import has_embeddings, read_embeddings
from sbir.manifest import read_manifest
from models.embed import EmbedParams
from sbir.metrics import compute_retrieval, request_for
from stages.evaluate import EvaluateParams, evaluate_embeddings
from helpers import config, params_section, write_params


class Oracle(RetrievalModel):
    """Knows each image's category (by pixel hash): a perfect category-level retriever."""

    def __init__(self, manifest) -> None:
        self.lookup = {}
        categories = sorted(manifest.frame["category"].unique())
        for path, category in zip(manifest.frame["path"], manifest.frame["category"]):
            pixels = load_image(manifest.resolve(path), self.preprocess("photo"))
            self.lookup[hashlib.sha1(pixels.numpy().tobytes()).hexdigest()] = categories.index(category)
        self.embedding_dim = len(categories)
        self.name = "oracle"

    def preprocess(self, domain: str) -> Preprocess:
        return Preprocess(image_size=64)

    def encode_batch(self, batch: torch.Tensor, domain: str) -> np.ndarray:
        out = np.zeros((len(batch), self.embedding_dim), dtype=np.float32)
        for row, image in enumerate(batch):
            out[row, self.lookup[hashlib.sha1(image.numpy().tobytes()).hexdigest()]] = 1
        return out


class InstanceOracle(Oracle):
    """Scores a pair 1 per shared category and 1 more for the sketch's own photo: a perfect pair scorer."""

    def __init__(self, manifest) -> None:
        super().__init__(manifest)
        self.instance = {}
        for path, instance in zip(manifest.frame["path"], manifest.frame["instance_id"]):
            pixels = load_image(manifest.resolve(path), self.preprocess("photo"))
            self.instance.setdefault(hashlib.sha1(pixels.numpy().tobytes()).hexdigest(), instance)

    def score_pairs(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        def key(image: torch.Tensor) -> tuple[int, str]:
            digest = hashlib.sha1(image.numpy().tobytes()).hexdigest()
            return self.lookup[digest], self.instance[digest]

        return np.array([sum(a == b for a, b in zip(key(s), key(p))) for s, p in zip(sketches, photos)],
                        dtype=np.float32)


class GridOracle(InstanceOracle):
    """The perfect pair scorer over every sketch-photo pair (the RN mode's capability); records its calls."""

    def __init__(self, manifest) -> None:
        super().__init__(manifest)
        self.calls: list[tuple[int, int]] = []

    def score_grid(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        self.calls.append((len(sketches), len(photos)))
        return np.stack([self.score_pairs(s[None].expand(len(photos), -1, -1, -1), photos) for s in sketches])


def _evaluate(model, manifest, params, out, trained=None):
    stored = out / "embeddings"
    if not has_embeddings(stored):
        embed_dataset(model, manifest, stored, config(EmbedParams, "embed", workers=0), progress=False)
    return evaluate_embeddings(read_embeddings(stored, manifest), manifest, params, out / "eval", trained, model)


@pytest.fixture(scope="module")
def manifest(tiny_openmoji: Path):
    return read_manifest(tiny_openmoji)


def test_oracle_scores_perfect_category_metrics_and_outputs_are_written(manifest, tmp_path: Path) -> None:
    document = _evaluate(Oracle(manifest), manifest, config(EvaluateParams, "evaluate", grid_queries=3, grid_top_k=4), tmp_path)
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
    assert "generalised" in document and "reranked" not in document
    out = tmp_path / "eval"
    written = {p.name for p in out.iterdir()}
    assert written == {"metrics.json", "pr.csv", "pk.csv", "per_category.csv", "grid.png", "explanations"}
    # an oracle has no explain capability: the sheets folder says so instead of holding pictures
    assert {p.name for p in (out / "explanations").iterdir()} == {"index.json"}
    assert "neither the explain nor" in json.loads((out / "explanations" / "index.json").read_text())["note"]
    assert json.loads((out / "metrics.json").read_text())["zero_shot"] == zero_shot
    pr = pd.read_csv(out / "pr.csv")
    assert np.allclose(pr["precision"], 1.0)
    table = pd.read_csv(out / "per_category.csv")
    assert set(table["category"]) == set(unseen["category"])
    stored = read_embeddings(tmp_path / "embeddings", manifest)
    assert set(stored.rows["split"]) == {"test_unseen", "test_seen"}
    assert (stored.rows["path"] == manifest.frame["path"].iloc[stored.rows["row"]].to_numpy()).all()
    with Image.open(out / "grid.png") as grid:
        assert grid.width == 5 * (96 + 4)  # query + top 4


def test_hog_beats_random_on_openmoji(manifest, tmp_path: Path) -> None:
    params = config(EvaluateParams, "evaluate", generalised=False, grid_queries=2)
    hog = _evaluate(create_model("baseline_hog", params_section("baseline_hog")), manifest, params, tmp_path / "h")
    rnd = _evaluate(create_model("baseline_random", params_section("baseline_random")), manifest, params, tmp_path / "r")
    assert hog["zero_shot"]["map_all/sklearn/query"] > rnd["zero_shot"]["map_all/sklearn/query"]
    assert hog["zero_shot"]["fg/acc@1/gallery"] > rnd["zero_shot"]["fg/acc@1/gallery"]


def test_pair_scorer_re_ranks_the_top_k(manifest, tmp_path: Path) -> None:
    model = InstanceOracle(manifest)
    plain = _evaluate(model, manifest, config(EvaluateParams, "evaluate", generalised=False, grid_queries=2, rerank_top_k=0), tmp_path)
    assert "score_pairs" in model.capabilities and "reranked" not in plain
    params = config(EvaluateParams, "evaluate", generalised=False, grid_queries=2, rerank_top_k=10)
    document = _evaluate(model, manifest, params, tmp_path)
    # the embedding ranks every photo of the category alike; the pair scorer lifts the sketch's own photo first
    assert plain["zero_shot"]["fg/acc@1/gallery"] < 1.0
    assert document["reranked"]["fg/acc@1/gallery"] == pytest.approx(1.0)
    assert document["reranked"]["map_all/sklearn/query"] == pytest.approx(plain["zero_shot"]["map_all/sklearn/query"])


def test_a_grid_scorer_ranks_every_pair_in_bounded_blocks(manifest, tmp_path: Path) -> None:
    model = GridOracle(manifest)
    params = config(EvaluateParams, "evaluate", generalised=False, grid_queries=2, rerank_top_k=0, relation_all=True)
    document = _evaluate(model, manifest, params, tmp_path)
    assert "score_grid" in model.capabilities and "reranked" not in document
    assert document["relation_all"]["fg/acc@1/gallery"] == pytest.approx(1.0)  # its own photo first, every query
    assert document["relation_all"]["map_all/sklearn/query"] == pytest.approx(1.0)
    sketches = manifest.select(split="test_unseen", domain="sketch").reset_index(drop=True)
    photos = manifest.select(split="test_unseen", domain="photo").reset_index(drop=True)
    model.calls.clear()
    every = np.arange(len(sketches))
    blocks = score_every_pair(model, manifest, sketches, photos, block=3).rows(every)
    assert max(max(call) for call in model.calls) <= 3 and sum(a * b for a, b in model.calls) == blocks.size
    whole = score_every_pair(model, manifest, sketches, photos, block=10_000)
    assert np.array_equal(blocks, whole.rows(every))  # made per chunk of rows: the same scores
    assert np.array_equal(whole.rows(every[::-1][:2]), blocks[every[::-1][:2]])
    paired = np.arange(len(photos)) % 2 == 0
    model.calls.clear()
    assert np.array_equal(whole.columns(paired).rows(every), blocks[:, paired])
    assert sum(a * b for a, b in model.calls) == len(sketches) * paired.sum()  # only the kept photos scored
    off = _evaluate(model, manifest, config(EvaluateParams, "evaluate", generalised=False, grid_queries=2,
                                            rerank_top_k=0, relation_all=False), tmp_path)
    assert "relation_all" not in off


def test_cli_rejects_bad_params_with_exit_code_2(manifest, tmp_path: Path, monkeypatch, capsys) -> None:
    from stages.evaluate import main

    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/openmoji_zs").symlink_to(manifest.image_root)
    monkeypatch.chdir(tmp_path)
    cases = {"protocols: [nonsense]": "unknown protocol", "ties: maybe": "ties: expected one of",
             "rerank_top_k: many": "rerank_top_k: expected int", "grid: 3": "unknown key(s) ['grid']"}
    for line, message in cases.items():
        write_params(tmp_path / "params.yaml", {"evaluate": yaml.safe_load(line)})
        assert main(["--model", "baseline_hog", "--no-progress"]) == 2
        assert message in capsys.readouterr().err
    write_params(tmp_path / "params.yaml")
    assert main(["--model", "baseline_hog", "--no-progress"]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_cross_dataset_excludes_and_reports_trained_categories(manifest, tmp_path: Path) -> None:
    unseen = sorted(manifest.select(split="test_unseen")["category"].unique())
    trained = {"dataset": "other", "train_categories": [unseen[0].upper().replace("-", " "), "zebra"]}
    hog = create_model("baseline_hog", params_section("baseline_hog"))
    document = _evaluate(hog, manifest, config(EvaluateParams, "evaluate", generalised=False), tmp_path, trained)
    assert document["cross_dataset"] == {"trained_on": "other",
                                         "trained_categories_in_test": [normalize_category(unseen[0])],
                                         "excluded": [normalize_category(unseen[0])]}
    assert document["zero_shot"]["n_classes"] == len(unseen) - 1
    kept = _evaluate(hog, manifest, config(EvaluateParams, "evaluate", generalised=False, exclude_trained_categories=False), tmp_path,
                     trained)
    assert kept["zero_shot"]["n_classes"] == len(unseen)


def test_style_shift_report_from_restyled_sketches(manifest, tmp_path: Path) -> None:
    """Sketches redrawn `in_style` are the prepared ones, so their ratio is exactly 1; other styles are reported."""
    from sbir.datasets import create
    from stages.restyle import RestyleParams

    dataset = create("openmoji_zs", **params_section("prepare.openmoji_zs", max_items_per_category=2, sketches_per_item=2, image_size=64, workers=1))
    styles = dataset.restyle(manifest, tmp_path / "styles", ("in_style", "thick_marker"), progress=False)
    assert len(styles) == 2 * len(manifest.select(split="test_unseen", domain="sketch"))
    hog = create_model("baseline_hog", params_section("baseline_hog"))
    embed_dataset(hog, manifest, tmp_path / "embeddings", config(EmbedParams, "embed", workers=0), progress=False, styles=styles,
                  styles_root=tmp_path / "styles")
    stored = read_embeddings(tmp_path / "embeddings", manifest)
    assert stored.styles == ["in_style", "thick_marker"]
    document = evaluate_embeddings(stored, manifest, config(EvaluateParams, "evaluate", generalised=False, grid_queries=2),
                                   tmp_path / "eval", None, hog)
    shift = document["style_shift"]
    assert shift["in_style"]["map_all_ratio"] == pytest.approx(1.0) and shift["in_style"]["fg_acc@1_ratio"] == 1.0
    assert shift["thick_marker"]["n_queries"] == document["zero_shot"]["n_queries"]
    assert 0 < shift["thick_marker"]["map_all"] < 1
    with pytest.raises(ValueError, match="unknown style"):
        config(RestyleParams, "restyle", styles=["crayon"])


def test_fine_grained_galleries_hold_paired_photos_only_once_each() -> None:
    """As the papers: a sketch's own photo among the photos some sketch was drawn from, duplicates once; unpaired
    photos (Sketchy-Extended's ext_*) stay in the category-level gallery."""
    from sbir.fine_grained import fine_grained_on_paired_photos, paired_photos

    q_inst = np.array(["a", "b"])
    g_inst = np.array(["a", "\0g1", "a", "b"])  # a, an unpaired photo (its sentinel), a's duplicate, b
    assert paired_photos(q_inst, g_inst).tolist() == [True, False, False, True]
    sketches = np.array([[1.0, 0.0], [0.0, 1.0]])
    photos = np.array([[0.8, 0.6], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # the unpaired photo is a's nearest
    labels = (np.array(["c", "c"]), np.array(["c", "c", "c", "c"]))
    params = config(EvaluateParams, "evaluate")
    full = compute_retrieval(sketches, photos, *labels, q_inst, g_inst, request=request_for(["fine_grained"],
                             has_instances=True)).summary(["fine_grained"])
    assert full["fg/acc@1/gallery"] == pytest.approx(0.5)  # a's sketch finds the unpaired photo first
    summary = dict(full)
    fine_grained_on_paired_photos(sketches, photos, labels, q_inst, g_inst, params.ties, summary)
    assert summary["fg/acc@1/gallery"] == pytest.approx(1.0) and summary["fg/n_gallery"] == 2
    scores = dict(full)
    fine_grained_on_paired_photos(sketches @ photos.T, None, labels, q_inst, g_inst, params.ties, scores)
    assert scores["fg/acc@1/gallery"] == pytest.approx(1.0)  # a score matrix: the same columns kept
    untouched = {"fg/acc@1/gallery": 0.25}
    fine_grained_on_paired_photos(sketches, photos[[0, 3]], labels, q_inst, g_inst[[0, 3]], params.ties, untouched)
    assert untouched == {"fg/acc@1/gallery": 0.25, "fg/n_gallery": 2}  # all paired: nothing recomputed
