"""Stage ``evaluate@<model>``: zero-shot retrieval metrics of one model on one prepared dataset.

Reads the model's stored embeddings (``embed@<model>``) of the dataset's test rows and reports every protocol
variant of ``sbir.metrics`` (labelled), fine-grained Acc@K where sketches link to photos, and generalised
ZS-SBIR (unseen sketches against unseen + seen-category test photos). Where the model can score pairs
(``PairScorer``) and ``rerank_top_k`` > 0, each query's top-k is re-scored by it (``reranked`` in the report);
where it scores every pair (``GridScorer``: ZSE-SBIR's RN mode) and ``relation_all`` is set, the ranking by those
scores alone is reported too (``relation_all``).
Cross-dataset: evaluate a model trained on dataset A on dataset B (embedding B first if needed); categories of B
that A trained on are reported, and excluded from the zero-shot numbers unless ``exclude_trained_categories``
is false. Across styles (``stages.cross_style``): the same unseen sketches against each photo-only artwork gallery
of ``cross_galleries`` built for the dataset (``cross_gallery``) and against all photo styles at once
(``mixed_gallery``); other styles of sketches (restyled, and the sketch sets of ``cross_sketches``) against the
dataset's photos (``style_shift``).

Outputs in ``artifacts/eval/<dataset>/<model>/``: ``metrics.json`` (dvc metrics), ``pr.csv`` and ``pk.csv``
(dvc plots), ``per_category.csv`` and ``grid.png`` (sketch queries with their top-k, hits marked).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.checkpoint import load_model, model_folder, read_config
from models.embed import EmbedParams, embed_dataset, stored_galleries
from models.interface import GridScorer, PairScorer, RetrievalModel
from models.pair_ranking import rerank, score_every_pair
from sbir import paths
from sbir.categories import normalize_category
from sbir.config import Count, Params, PositiveInt
from sbir.embeddings import Embeddings, has_embeddings, read_embeddings
from sbir.fine_grained import fine_grained_on_paired_photos, instance_ids, keep_rows
from sbir.index import top_k
from sbir.io import atomic_write, atomic_write_json
from sbir.manifest import Manifest, ManifestError, read_manifest
from sbir.metrics import HEADLINE, compute_retrieval, request_for
from sbir.plots import pick_queries, retrieval_grid
from sbir.stage import run_stage, stage_parser
from stages.cross_style import cross_gallery, mixed_gallery, style_shift

log = logging.getLogger("stages.evaluate")


@dataclass
class EvaluateParams:
    """``params.yaml`` section ``evaluate``."""

    dataset: str
    protocols: list[str]  # protocol presets of sbir.metrics, or "all"
    ties: Literal["stable", "group"]
    generalised: bool
    exclude_trained_categories: bool
    rerank_top_k: Count  # > 0: the top-k of models with a pair scorer (ZSE-SBIR) re-scored
    relation_all: bool  # every pair scored by models with a grid scorer (ZSE-SBIR's RN mode)
    grid_queries: Count
    grid_top_k: PositiveInt
    explain_queries: Count  # sample hits and as many misses: explanation sheets (models that can explain)
    seed: int
    cross_galleries: list[str]  # photo-only artwork sets built for the dataset (stages.cross_style)
    cross_sketches: list[str]  # sketch-only artwork sets built for the dataset
    mixed_gallery: bool  # also: the unseen sketches against every photo style at once

    def __post_init__(self) -> None:
        request_for(self.protocols, has_instances=True)  # an unknown protocol fails here, before any work


def evaluate_embeddings(embeddings: Embeddings, manifest: Manifest, params: EvaluateParams, out_dir: Path,
                        trained: dict[str, Any] | None = None, model: RetrievalModel | None = None,
                        galleries: dict[str, Embeddings] | None = None,
                        sketch_sets: dict[str, Embeddings] | None = None) -> dict[str, Any]:
    """Compute and write every output of the stage from stored embeddings; returns the metrics document.
    ``galleries``: photo-only artwork galleries; ``sketch_sets``: sketch-only artwork sets (stages.cross_style)."""
    trained = trained or {}
    trained_categories = {normalize_category(c) for c in trained.get("train_categories", [])}
    unseen_names = {normalize_category(c) for c in manifest.select(split="test_unseen")["category"].unique()}
    overlap = sorted(trained_categories & unseen_names)
    drop = set(overlap) if params.exclude_trained_categories else set()
    sketch_emb, sketches = embeddings.select(split="test_unseen", domain="sketch")
    photo_emb, photos = embeddings.select(split="test_unseen", domain="photo")
    keep_s, keep_p = keep_rows(sketches, drop), keep_rows(photos, drop)
    sketch_emb, sketches = sketch_emb[keep_s], sketches[keep_s].reset_index(drop=True)
    photo_emb, photos = photo_emb[keep_p], photos[keep_p].reset_index(drop=True)
    if sketches.empty or photos.empty:
        raise ManifestError(f"{manifest.dataset}: no test_unseen sketches or photos left to evaluate "
                            f"(excluded as trained on: {overlap})")
    q_inst, g_inst = instance_ids(sketches, "q"), instance_ids(photos, "g")
    has_fg = q_inst is not None and g_inst is not None
    request = request_for(params.protocols, has_instances=has_fg, curves=True)
    labels = sketches["category"].to_numpy(str), photos["category"].to_numpy(str)
    result = compute_retrieval(sketch_emb, photo_emb, *labels, q_inst if has_fg else None,
                               g_inst if has_fg else None, request=request, ties=params.ties)
    zero_shot = result.summary(params.protocols)
    if has_fg:
        fine_grained_on_paired_photos(sketch_emb, photo_emb, labels, q_inst, g_inst, params.ties, zero_shot)
    document: dict[str, Any] = {
        "dataset": manifest.dataset, "model": embeddings.meta.get("model", {}),
        "zero_shot": zero_shot,
        "cross_dataset": {"trained_on": trained.get("dataset"), "trained_categories_in_test": overlap,
                          "excluded": sorted(drop)},
    }
    if model is not None and isinstance(model, PairScorer) and params.rerank_top_k > 0:
        scores = rerank(model, manifest, sketches, photos, sketch_emb, photo_emb, params.rerank_top_k)
        reranked = compute_retrieval(scores, None, *labels, q_inst if has_fg else None, g_inst if has_fg else None,
                                     request=request_for(params.protocols, has_instances=has_fg), ties=params.ties)
        document["reranked"] = {"top_k": params.rerank_top_k, **reranked.summary(params.protocols)}
        if has_fg:
            fine_grained_on_paired_photos(scores, None, labels, q_inst, g_inst, params.ties, document["reranked"])
    if model is not None and isinstance(model, GridScorer) and params.relation_all:
        scores = score_every_pair(model, manifest, sketches, photos)
        every_pair = compute_retrieval(scores, None, *labels, q_inst if has_fg else None, g_inst if has_fg else None,
                                       request=request_for(params.protocols, has_instances=has_fg), ties=params.ties)
        document["relation_all"] = every_pair.summary(params.protocols)
        if has_fg:
            fine_grained_on_paired_photos(scores, None, labels, q_inst, g_inst, params.ties,
                                          document["relation_all"])
    if embeddings.styles or sketch_sets:
        document["style_shift"] = style_shift(embeddings, photo_emb, photos, drop, zero_shot, params.ties,
                                              sketch_sets)
    if galleries:
        document["cross_gallery"] = cross_gallery(sketch_emb, sketches, galleries, drop, params.protocols,
                                                  params.ties, zero_shot)
        if params.mixed_gallery:
            document["mixed_gallery"] = mixed_gallery(sketch_emb, sketches, photo_emb, photos, galleries, drop,
                                                      params.ties)
    seen_emb, seen_photos = embeddings.select(split="test_seen", domain="photo")
    if params.generalised and not seen_photos.empty:
        gallery = pd.concat([photos, seen_photos], ignore_index=True)
        g_inst_all = instance_ids(gallery, "g")
        general = compute_retrieval(sketch_emb, np.concatenate([photo_emb, seen_emb]), labels[0],
                                    gallery["category"].to_numpy(str), q_inst if has_fg else None,
                                    g_inst_all if has_fg else None,
                                    request=request_for(params.protocols, has_instances=has_fg), ties=params.ties)
        document["generalised"] = general.summary(params.protocols)

    document["explanations"] = write_explanations(model, manifest, sketches, photos, sketch_emb, photo_emb, params,
                                                  out_dir / "explanations")
    atomic_write_json(out_dir / "metrics.json", document)
    curves = result.mean_curves()
    _write_csv(out_dir / "pr.csv", pd.DataFrame({"recall": curves["recall"], "precision": curves["precision/query"],
                                                 "precision_class_avg": curves["precision/class"]}))
    _write_csv(out_dir / "pk.csv", pd.DataFrame({"k": curves["k"], "precision": curves["p_at_k/k/query"],
                                                 "precision_min_k_rel": curves["p_at_k/min_k_rel/query"]}))
    table = pd.DataFrame.from_dict(result.per_category(), orient="index").rename_axis("category")
    _write_csv(out_dir / "per_category.csv",
               table.sort_values(table.columns[2] if len(table.columns) > 2 else table.columns[0]), index=True)
    _write_grid(manifest, sketches, photos, sketch_emb, photo_emb, params, out_dir / "grid.png")
    return document


def _write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> None:
    text = frame.to_csv(index=index, float_format="%.4f" if index else None)
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _write_grid(manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame, sketch_emb: np.ndarray,
                photo_emb: np.ndarray, params: EvaluateParams, target: Path) -> None:
    chosen = pick_queries(sketches["category"].to_numpy(str), params.grid_queries, params.seed)
    _, top = top_k(sketch_emb[chosen], photo_emb, params.grid_top_k)
    relevance = []
    for row, query in zip(top, chosen):
        same = photos["category"].to_numpy(str)[row] == sketches["category"].iloc[query]
        query_instance = sketches["instance_id"].iloc[query]
        exact = (photos["instance_id"].to_numpy(object)[row] == query_instance) & pd.notna(query_instance)
        relevance.append(np.where(exact & same, 2, same.astype(int)).tolist())
    image = retrieval_grid([manifest.resolve(sketches["path"].iloc[q]) for q in chosen],
                           [[manifest.resolve(photos["path"].iloc[j]) for j in row] for row in top], relevance,
                           [str(sketches["category"].iloc[q]) for q in chosen])
    atomic_write(target, lambda handle: image.save(handle, format="PNG"))


def write_explanations(model: RetrievalModel | None, manifest: Manifest, sketches: pd.DataFrame,
                       photos: pd.DataFrame, sketch_emb: np.ndarray, photo_emb: np.ndarray, params: EvaluateParams,
                       folder: Path) -> dict[str, Any]:
    """Explanation sheets (and syntheses) of sample queries whose first photo is a hit, and of misses, in
    ``folder``; an ``index.json`` lists them (or says why there are none)."""
    from PIL import Image

    from models.explain import RankedPhoto, can_explain, query_sheet

    folder.mkdir(parents=True, exist_ok=True)
    capable = model is not None and can_explain(model) and params.explain_queries > 0
    index: dict[str, Any] = {"capabilities": sorted(model.capabilities) if model is not None else [], "sheets": []}
    if capable:
        _, top = top_k(sketch_emb, photo_emb, params.grid_top_k)
        categories = photos["category"].to_numpy(str)
        hit = categories[top[:, 0]] == sketches["category"].to_numpy(str)
        order = np.random.default_rng(params.seed).permutation(len(sketches))
        chosen = [("hit", q) for q in order if hit[q]][: params.explain_queries]
        chosen += [("miss", q) for q in order if not hit[q]][: params.explain_queries]
        for position, (kind, query) in enumerate(chosen):
            number = sum(other == kind for other, _ in chosen[:position]) + 1
            with Image.open(manifest.resolve(sketches["path"].iloc[query])) as opened:
                sketch = opened.convert("RGB")
            ranked = []
            for rank, row in enumerate(top[query], start=1):
                with Image.open(manifest.resolve(photos["path"].iloc[row])) as opened:
                    ranked.append(RankedPhoto(opened.convert("RGB"), f"#{rank} {categories[row]}"
                                              f"{' (hit)' if categories[row] == sketches['category'].iloc[query] else ''}"))
            title = f"{kind}: sketch of {sketches['category'].iloc[query]} ({sketches['instance_id'].iloc[query]})"
            sheet = query_sheet(model, sketch, ranked, title)
            name = f"{kind}_{number:02d}.png"
            atomic_write(folder / name, lambda handle, sheet=sheet: sheet.save(handle, format="PNG"))
            index["sheets"].append({"file": name, "kind": kind, "query": str(sketches["path"].iloc[query]),
                                    "category": str(sketches["category"].iloc[query])})
    else:
        index["note"] = "no sheets: the model has neither the explain nor the synthesize capability"
    atomic_write_json(folder / "index.json", index)
    return {"folder": str(folder), "sheets": [entry["file"] for entry in index["sheets"]]}


def evaluate_model(reference: str, dataset: str, params: EvaluateParams, embed: EmbedParams,
                   out_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a model folder (by name or path) on a prepared dataset, embedding it first if no stored
    embeddings exist (cross-dataset runs outside the pipeline)."""
    folder = model_folder(reference)
    trained = read_config(folder)
    manifest = read_manifest(paths.prepared_dir(dataset))
    stored = paths.embeddings_dir(dataset, folder.name)
    model = None
    if not has_embeddings(stored):
        log.info("no stored embeddings of %s on %s: embedding now", folder.name, dataset)
        model = load_model(folder)
        embed_dataset(model, manifest, stored, embed, progress=progress)
    embeddings = read_embeddings(stored, manifest)
    cross = stored_galleries(folder, dataset, params.cross_galleries, stored, embed, progress)
    sketch_sets = stored_galleries(folder, dataset, params.cross_sketches, stored, embed, progress,
                                   "evaluate.cross_sketches")
    pair_work = params.rerank_top_k > 0 or params.relation_all or params.explain_queries > 0
    if pair_work and trained.get("kind") == "method":
        model = model or load_model(folder)
    document = evaluate_embeddings(embeddings, manifest, params, out_dir or paths.eval_dir(dataset, folder.name),
                                   trained, model, cross, sketch_sets)
    return document


def run_evaluate(args: argparse.Namespace, params: Params) -> int:
    settings = params.read(EvaluateParams, "evaluate")
    document = evaluate_model(args.model, args.dataset or settings.dataset, settings, params.read(EmbedParams, "embed"),
                              args.out, progress=not args.no_progress)
    return headline(document, Path(args.model).name)


def headline(document: dict[str, Any], model: str) -> dict[str, Any]:
    """The numbers of an evaluation that matter at a glance (its stage line, named as in the closing table:
    ``sbir.metrics.HEADLINE``); ``metrics.json`` has them all."""
    zero_shot = document["zero_shot"]
    numbers = {name: round(zero_shot[key], 4) for name, key in HEADLINE.items() if key in zero_shot}
    return {"model": model, "dataset": document["dataset"], **numbers}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="a model name (artifacts/checkpoints/<name>) or a folder")
    parser.add_argument("--dataset", default=None, help="default: evaluate.dataset")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/eval/<dataset>/<model>")
    return run_stage("evaluate", parser, run_evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
