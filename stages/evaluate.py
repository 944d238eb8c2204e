"""Stage ``evaluate``: zero-shot retrieval metrics of one model on one prepared dataset.

Embeds the dataset's unseen-category test sketches and photos through the model interface and reports every
protocol variant of ``sbir.metrics`` (labelled), fine-grained Acc@K where sketches link to photos, and
generalised ZS-SBIR (unseen sketches against unseen + seen-category test photos). Cross-dataset: evaluate a
checkpoint trained on dataset A on dataset B; categories of B that A trained on are reported, and excluded from
the zero-shot numbers unless ``exclude_trained_categories`` is false.

The model is a registered baseline (``evaluate.baselines.<name>`` holds its params) or a checkpoint folder.
Outputs in ``artifacts/eval/<dataset>/<name>/``: ``metrics.json`` (dvc metrics), ``pr.csv`` and ``pk.csv``
(dvc plots), ``per_category.csv`` and ``grid.png`` (sketch queries with their top-k, hits marked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.embed import embed_images
from models.interface import RetrievalModel
from models.registry import create_model, load_model
from models.backbones import BackboneError
from sbir.config import ConfigError, build, load_params, section
from sbir.datasets.benchmark_lists import normalize_class as normalise_category
from sbir.manifest import Manifest, ManifestError, read_manifest
from sbir.metrics import compute_retrieval, request_for
from sbir.plots import pick_queries, retrieval_grid

EVAL_ROOT = Path("artifacts/eval")


@dataclass
class EvaluateParams:
    """``params.yaml`` section ``evaluate``."""

    dataset: str = "openmoji_zs"
    batch_size: int = 64
    protocols: list[str] = field(default_factory=lambda: ["all"])
    ties: str = "stable"
    generalised: bool = True
    exclude_trained_categories: bool = True
    grid_queries: int = 8
    grid_top_k: int = 8
    seed: int = 0
    workers: int = 2
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)


def resolve_model(reference: str, params: EvaluateParams) -> tuple[RetrievalModel, dict[str, Any]]:
    """A baseline by name, or a trained model from its checkpoint folder (with its training facts)."""
    path = Path(reference)
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        return load_model(path), config
    if reference not in params.baselines:
        raise ConfigError(f"model '{reference}' is neither a checkpoint folder nor listed under evaluate.baselines "
                          f"(listed: {sorted(params.baselines)})")
    return create_model(reference, **(params.baselines[reference] or {})), {}


def _rows(manifest: Manifest, split: str, domain: str, drop: set[str]) -> pd.DataFrame:
    rows = manifest.select(split=split, domain=domain)
    return rows[~rows["category"].map(normalise_category).isin(drop)].reset_index(drop=True)


def _embed(model: RetrievalModel, manifest: Manifest, rows: pd.DataFrame, domain: str,
           params: EvaluateParams, progress: bool) -> np.ndarray:
    paths = [manifest.resolve(p) for p in rows["path"]]
    return embed_images(model, paths, domain, batch_size=params.batch_size, workers=params.workers,
                        progress=progress)


def _instances(rows: pd.DataFrame, prefix: str) -> np.ndarray | None:
    """Instance ids; a missing id gets a sentinel unique to its row, so it matches nothing."""
    ids = rows["instance_id"]
    if ids.isna().all():
        return None
    sentinels = pd.Series([f"\0{prefix}{i}" for i in range(len(ids))], index=ids.index)
    return ids.fillna(sentinels).to_numpy(dtype=str)


def evaluate_model(model: RetrievalModel, manifest: Manifest, params: EvaluateParams, out_dir: Path,
                   trained: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Compute and write every output of the stage; returns the metrics document."""
    trained = trained or {}
    trained_categories = {normalise_category(c) for c in trained.get("train_categories", [])}
    unseen_names = {normalise_category(c) for c in manifest.select(split="test_unseen")["category"].unique()}
    overlap = sorted(trained_categories & unseen_names)
    drop = set(overlap) if params.exclude_trained_categories else set()
    sketches = _rows(manifest, "test_unseen", "sketch", drop)
    photos = _rows(manifest, "test_unseen", "photo", drop)
    if sketches.empty or photos.empty:
        raise ManifestError(f"{manifest.dataset}: no test_unseen sketches or photos left to evaluate "
                            f"(excluded as trained on: {overlap})")
    started = time.perf_counter()
    sketch_emb = _embed(model, manifest, sketches, "sketch", params, progress)
    photo_emb = _embed(model, manifest, photos, "photo", params, progress)
    embed_seconds = time.perf_counter() - started

    q_inst, g_inst = _instances(sketches, "q"), _instances(photos, "g")
    has_fg = q_inst is not None and g_inst is not None
    request = request_for(params.protocols, has_instances=has_fg, curves=True)
    result = compute_retrieval(sketch_emb, photo_emb, sketches["category"].to_numpy(str),
                               photos["category"].to_numpy(str), q_inst if has_fg else None,
                               g_inst if has_fg else None, request=request, ties=params.ties)
    document: dict[str, Any] = {
        "dataset": manifest.dataset, "model": model.describe(),
        "zero_shot": result.summary(params.protocols),
        "cross_dataset": {"trained_on": trained.get("dataset"), "trained_categories_in_test": overlap,
                          "excluded": sorted(drop)},
    }
    seen_photos = _rows(manifest, "test_seen", "photo", set())
    if params.generalised and not seen_photos.empty:
        seen_emb = _embed(model, manifest, seen_photos, "photo", params, progress)
        gallery = pd.concat([photos, seen_photos], ignore_index=True)
        g_inst_all = _instances(gallery, "g")
        general = compute_retrieval(sketch_emb, np.concatenate([photo_emb, seen_emb]),
                                    sketches["category"].to_numpy(str), gallery["category"].to_numpy(str),
                                    q_inst if has_fg else None, g_inst_all if has_fg else None,
                                    request=request_for(params.protocols, has_instances=has_fg), ties=params.ties)
        document["generalised"] = general.summary(params.protocols)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    curves = result.mean_curves()
    pd.DataFrame({"recall": curves["recall"], "precision": curves["precision/query"],
                  "precision_class_avg": curves["precision/class"]}).to_csv(out_dir / "pr.csv", index=False)
    pd.DataFrame({"k": curves["k"], "precision": curves["p_at_k/k/query"],
                  "precision_min_k_rel": curves["p_at_k/min_k_rel/query"]}).to_csv(out_dir / "pk.csv", index=False)
    table = pd.DataFrame.from_dict(result.per_category(), orient="index").rename_axis("category")
    table.sort_values(table.columns[2] if len(table.columns) > 2 else table.columns[0]).to_csv(
        out_dir / "per_category.csv", float_format="%.4f")
    _write_grid(manifest, sketches, photos, sketch_emb, photo_emb, params, out_dir / "grid.png")
    print(f"embedded {len(sketches)} sketches and {len(photos)} photos in {embed_seconds:.1f} s", file=sys.stderr)
    return document


def _write_grid(manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame, sketch_emb: np.ndarray,
                photo_emb: np.ndarray, params: EvaluateParams, target: Path) -> None:
    chosen = pick_queries(sketches["category"].to_numpy(str), params.grid_queries, params.seed)
    scores = sketch_emb[chosen] @ photo_emb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, : params.grid_top_k]
    relevance = []
    for row, query in zip(top, chosen):
        same = photos["category"].to_numpy(str)[row] == sketches["category"].iloc[query]
        query_instance = sketches["instance_id"].iloc[query]
        exact = (photos["instance_id"].to_numpy(object)[row] == query_instance) & pd.notna(query_instance)
        relevance.append(np.where(exact & same, 2, same.astype(int)).tolist())
    image = retrieval_grid([manifest.resolve(sketches["path"].iloc[q]) for q in chosen],
                           [[manifest.resolve(photos["path"].iloc[j]) for j in row] for row in top], relevance,
                           [str(sketches["category"].iloc[q]) for q in chosen])
    image.save(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a baseline under evaluate.baselines, or a checkpoint folder")
    parser.add_argument("--dataset", default=None, help="default: evaluate.dataset")
    parser.add_argument("--name", default=None, help="output folder name (default: the model's name)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/eval/<dataset>/<name>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        params = build(EvaluateParams, section(load_params(args.params), "evaluate", source=args.params),
                       f"{args.params}: evaluate")
        dataset = args.dataset or params.dataset
        model, trained = resolve_model(args.model, params)
        name = args.name or Path(args.model).name
        manifest = read_manifest(Path("data/prepared") / dataset)
        document = evaluate_model(model, manifest, params, args.out or EVAL_ROOT / dataset / name, trained,
                                  progress=not args.no_progress)
    except (ConfigError, ManifestError, FileNotFoundError, KeyError, ValueError, TypeError, BackboneError) as error:
        print(f"evaluate failed: {error}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in document["zero_shot"].items() if k.startswith(("preset/", "map_all"))}
    print(json.dumps({"dataset": document["dataset"], "model": name, **shown}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
