"""Evaluation across styles: OpenMoji-ZS's unseen sketches against another artist's photos of the same emoji
(``cross_gallery``) and all photo styles at once (``mixed_gallery``), and another artist's sketches against the
OpenMoji photos (``style_shift``), from synthetic embeddings and through the embed and evaluate stages."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.checkpoint import save_baseline
from models.registry import create_model
from sbir import paths
from sbir.datasets import create
from sbir.embeddings import EMBEDDED_SPLITS, ROW_COLUMNS, Embeddings, applicable_galleries, read_embeddings
from sbir.manifest import ManifestError, manifest_fingerprint, read_manifest
from stages.cross_style import cross_gallery
from stages.evaluate import EvaluateParams
from helpers import config, params_section, write_params


def _embeddings(items: list[tuple[str, str]], domain: str, n_instances: int, instances: list[str]) -> Embeddings:
    """Rows (category, instance) with vectors = category one-hot + 0.3 × instance one-hot."""
    vectors = np.zeros((len(items), 3 + n_instances), dtype=np.float32)
    for row, (category, instance) in enumerate(items):
        vectors[row, "abc".index(category)] = 1
        if instance in instances:
            vectors[row, 3 + instances.index(instance)] = 0.3
    rows = pd.DataFrame({"row": range(len(items)), "path": [f"{i}.png" for _, i in items], "domain": domain,
                         "split": "test_unseen", "category": [c for c, _ in items],
                         "instance_id": [i for _, i in items], "style": ""}).loc[:, ROW_COLUMNS]
    return Embeddings(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), rows, {"dataset": "twemoji"})


def test_section_scores_category_and_same_emoji_hits() -> None:
    gallery_items = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("c", "c1")]
    instances = [i for _, i in gallery_items]
    sketch_items = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("c", "c1"), ("c", "c1"), ("a", "a3")]
    sketches = _embeddings(sketch_items, "sketch", len(instances), instances)
    gallery = _embeddings(gallery_items, "photo", len(instances), instances)
    params = config(EvaluateParams, "evaluate")
    report = cross_gallery(sketches.vectors, sketches.rows, {"twemoji": gallery}, set(), params.protocols, params.ties,
                           {"map_all/sklearn/query": 0.5, "fg/acc@1/gallery": 0.8})
    section = report["twemoji"]
    assert section["gallery_dataset"] == "twemoji"
    assert section["n_queries"] == 7 and section["n_gallery"] == 5
    assert section["map_all/sklearn/query"] == pytest.approx(1.0)
    assert section["fg/acc@1/gallery"] == pytest.approx(1.0)
    assert section["fg/n_excluded/gallery"] == 1  # the sketch of a3: the gallery has no photo of it
    assert section["p_100/min_k_rel/query"] == pytest.approx(1.0)
    assert section["map_all_ratio"] == pytest.approx(2.0) and section["fg_acc@1_ratio"] == pytest.approx(1.25)
    # categories a model trained on leave the gallery (their sketches were dropped before)
    dropped = cross_gallery(sketches.vectors, sketches.rows, {"twemoji": gallery}, {"c"}, params.protocols, params.ties)
    assert dropped["twemoji"]["n_gallery"] == 4 and dropped["twemoji"]["n_queries_no_relevant"] == 2


@pytest.fixture
def project(tiny_openmoji: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the tiny OpenMoji-ZS, its Twemoji gallery, a HOG baseline folder and params."""
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/openmoji_zs").symlink_to(tiny_openmoji)
    monkeypatch.chdir(tmp_path)
    for name in ("twemoji", "fluent_hc"):  # a photo style and a sketch style
        create(name, **params_section(f"prepare.{name}")).prepare(paths.prepared_dir(name), progress=False)
    hog = params_section("baseline_hog")
    save_baseline(paths.checkpoint_dir("baseline_hog"), "baseline_hog", hog, create_model("baseline_hog", hog))
    write_params(tmp_path / "params.yaml", {"embed": {"workers": 0}, "evaluate": {
        "generalised": False, "grid_queries": 2, "cross_galleries": ["twemoji"], "cross_sketches": ["fluent_hc"]}})
    return tmp_path


def test_embed_and_evaluate_stages_report_the_twemoji_gallery(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stages.embed import main as embed
    from stages.evaluate import main as evaluate
    from stages.report import print_table, style_rows, summary_rows, summary_table

    assert embed(["--model", "baseline_hog", "--dataset", "openmoji_zs", "--no-progress"]) == 0
    twemoji = read_manifest(paths.prepared_dir("twemoji"))
    stored_dir = paths.gallery_embeddings_dir(paths.embeddings_dir("openmoji_zs", "baseline_hog"), "twemoji")
    stored = read_embeddings(stored_dir, twemoji)
    assert stored.meta["manifest_fingerprint"] == manifest_fingerprint(twemoji)
    assert set(stored.rows["domain"]) == {"photo"} and len(stored.rows) == twemoji.frame["split"].isin(EMBEDDED_SPLITS).sum()

    capsys.readouterr()
    assert evaluate(["--model", "baseline_hog", "--no-progress"]) == 0
    document = json.loads((paths.eval_dir("openmoji_zs", "baseline_hog") / "metrics.json").read_text())
    zero_shot = document["zero_shot"]  # the stage says the numbers that matter in one line; metrics.json has all
    assert capsys.readouterr().out == (  # named as the closing table names them
        f"evaluate: model baseline_hog, dataset openmoji_zs, mAP@all {zero_shot['map_all/sklearn/query']:.4g}, "
        f"mAP@all VOC/class {zero_shot['map_all/voc/class']:.4g}, P@100 {zero_shot['p_100/k/query']:.4g}, "
        f"FG Acc@1 {zero_shot['fg/acc@1/gallery']:.4g}, FG Acc@5 {zero_shot['fg/acc@5/gallery']:.4g}\n")
    section = document["cross_gallery"]["twemoji"]
    assert section["n_gallery"] == len(twemoji.select(split="test_unseen")) and section["n_queries"] == document["zero_shot"]["n_queries"]
    assert section["fg/n_queries/gallery"] + section["fg/n_excluded/gallery"] == section["n_queries"]
    assert 0 < section["map_all/sklearn/query"] < 1 and 0 <= section["fg/acc@1/gallery"] <= 1
    assert section["map_all_ratio"] == pytest.approx(section["map_all/sklearn/query"] / zero_shot["map_all/sklearn/query"])
    sketch_style = document["style_shift"]["fluent_hc"]  # Fluent's line art of the same unseen emoji as queries
    fluent_hc = read_manifest(paths.prepared_dir("fluent_hc")).select(split="test_unseen")
    assert sketch_style["n_queries"] == len(fluent_hc) and 0 <= sketch_style["map_all"] <= 1
    assert sketch_style["map_all_ratio"] == pytest.approx(sketch_style["map_all"] / sketch_style["own_map_all"])
    mixed = document["mixed_gallery"]  # every photo style at once
    assert mixed["photos_per_style"] == {"own": zero_shot["n_gallery"], "twemoji": section["n_gallery"]}
    assert mixed["n_gallery"] == zero_shot["n_gallery"] + section["n_gallery"]
    row = summary_rows("openmoji_zs")[0]
    styles = {entry["set"]: entry for entry in style_rows("openmoji_zs")}
    assert set(styles) == {"in-distribution", "twemoji", "mixed", "fluent_hc"}
    assert styles["twemoji"]["baseline_hog"] == (f"{section['map_all/sklearn/query']:.3f} / "
                                                 f"{section['fg/acc@1/gallery']:.3f} ({section['map_all_ratio']:.2f}×)")
    long_rows = [{**row, "model": "a_model_name_far_longer_than_any_column_" * 3}]
    shown = io.StringIO()  # a file or a CI log: the table at its full width, nothing cut with "…"
    print_table(summary_table(long_rows, "openmoji_zs"), shown)
    assert "…" not in shown.getvalue() and long_rows[0]["model"] in shown.getvalue()
    assert all(name in shown.getvalue() for name in row)

    # outside the pipeline, missing gallery embeddings are computed on the fly
    for file in stored_dir.iterdir():
        file.unlink()
    assert evaluate(["--model", "baseline_hog", "--no-progress"]) == 0
    again = json.loads((paths.eval_dir("openmoji_zs", "baseline_hog") / "metrics.json").read_text())
    assert again["cross_gallery"] == document["cross_gallery"] and again["style_shift"] == document["style_shift"]

    assert applicable_galleries("sketchy21", ["twemoji"]) == {}  # built for openmoji_zs only
    with pytest.raises(ManifestError, match="cross_galleries lists 'ghost'.*prepare stage"):
        applicable_galleries("openmoji_zs", ["ghost"])
