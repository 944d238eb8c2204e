"""Training on artwork styles: which styles the default learns from, measured in- and off-distribution.

Each variant is ``train.styles`` (and optionally ``dsn.train`` / ``dsn.model`` overrides) on the committed
params.yaml: DSN is trained through the engine on OpenMoji-ZS's train split plus those styles' training rows, then
embedded and evaluated like the pipeline (``stages.evaluate``: unseen categories, every photo style as a gallery,
the mixed gallery, every sketch style as queries). HOG and the frozen ImageNet baseline are evaluated the same way
(no training) as the bars every model must clear. Results accumulate in
benchmarks/results/style_ablation.{json,md}; a variant already there is skipped unless ``--again``:
``python benchmarks/style_ablation.py --only none all``. Needs the prepared sets (`dvc repro validate_artwork
restyle`, or `make run`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from models.data import read_split
from models.embed import EmbedParams, embed_dataset, embed_galleries
from models.engine import TrainSection, train
from models.registry import create_model
from sbir import paths
from sbir.config import Params
from sbir.embeddings import applicable_galleries, read_embeddings
from sbir.env import apply_offline_defaults
from sbir.io import atomic_write_json, atomic_write_text
from sbir.logs import setup_logging
from sbir.manifest import read_manifest
from stages.evaluate import EvaluateParams, evaluate_embeddings
from stages.restyle import read_styles
from stages.train import method_settings, training_styles

RESULTS = Path(__file__).parent / "results"
PHOTO_STYLES = ["twemoji", "fluent_flat"]
SKETCH_STYLES = ["fluent_hc", "symbola"]
# name -> (model, train.styles, overrides of the model's params section)
VARIANTS: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "baseline_hog": ("baseline_hog", [], {}),
    "baseline_imagenet": ("baseline_imagenet", [], {}),
    "dsn, no styles (11 ep)": ("dsn", [], {"train": {"epochs": 11}}),
    "dsn, no styles (7 ep)": ("dsn", [], {"train": {"epochs": 7}}),
    "dsn + photo styles (7 ep)": ("dsn", PHOTO_STYLES, {"train": {"epochs": 7}}),
    "dsn + sketch styles (7 ep)": ("dsn", SKETCH_STYLES, {"train": {"epochs": 7}}),
    "dsn + all styles (7 ep)": ("dsn", PHOTO_STYLES + SKETCH_STYLES, {"train": {"epochs": 7}}),
    "dsn + all styles (5 ep)": ("dsn", PHOTO_STYLES + SKETCH_STYLES, {"train": {"epochs": 5}}),
    "dsn + all styles + strokes (5 ep)": ("dsn", PHOTO_STYLES + SKETCH_STYLES + ["openmoji_strokes"],
                                          {"train": {"epochs": 5}}),
}


def numbers(document: dict[str, Any]) -> dict[str, Any]:
    """mAP@all and FG Acc@1 of every evaluation set of one metrics document."""
    row = {"in-distribution": (document["zero_shot"]["map_all/sklearn/query"],
                               document["zero_shot"]["fg/acc@1/gallery"])}
    for name, section in document.get("cross_gallery", {}).items():
        row[name] = (section["map_all/sklearn/query"], section["fg/acc@1/gallery"])
    if "mixed_gallery" in document:
        row["mixed"] = (document["mixed_gallery"]["map_all/sklearn/query"], document["mixed_gallery"]["fg/acc@1/gallery"])
    for name, section in document.get("style_shift", {}).items():
        row[name] = (section["map_all"], section.get("fg_acc@1"), section["map_all_ratio"])
    return {key: [round(float(v), 4) for v in value] for key, value in row.items()}


def evaluate(model, manifest, out: Path, params: Params) -> dict[str, Any]:
    """Embed and evaluate as the pipeline does (unseen categories; not generalised)."""
    embed = params.read(EmbedParams, "embed")
    settings = params.replaced("evaluate", {"generalised": False, "explain_queries": 0, "grid_queries": 1,
                                            "rerank_top_k": 0, "relation_all": False}).read(EvaluateParams, "evaluate")
    embed_dataset(model, manifest, out, embed, progress=False, styles=read_styles(manifest.dataset),
                  styles_root=paths.styles_dir(manifest.dataset))
    sets = {kind: applicable_galleries(manifest.dataset, names) for kind, names in
            (("photo", settings.cross_galleries), ("sketch", settings.cross_sketches))}
    embed_galleries(model, {**sets["photo"], **sets["sketch"]}, out, embed, progress=False)
    stored = {kind: {name: read_embeddings(paths.gallery_embeddings_dir(out, name), gallery)
                     for name, gallery in found.items()} for kind, found in sets.items()}
    document = evaluate_embeddings(read_embeddings(out, manifest), manifest, settings, out / "eval", None, model,
                                   stored["photo"], stored["sketch"])
    return numbers(document)


def run_variant(model_name: str, styles: list[str], overrides: dict[str, Any], params: Params, manifest,
                out: Path) -> dict[str, Any]:
    if model_name != "dsn":
        model = create_model(model_name, params.section(model_name), f"variant {model_name}")
        return evaluate(model, manifest, out, params)
    runtime = params.read(TrainSection, "train").runtime
    variant = params.replaced("dsn.model", overrides.get("model", {})).replaced("dsn.train", overrides.get("train", {}))
    method, config = method_settings(variant, "dsn")
    data = read_split(manifest, "train", training_styles(manifest.dataset, styles))
    started = time.perf_counter()
    net, times = train(method, config, runtime, data, out / "state", progress=False)
    seconds = time.perf_counter() - started
    return {**evaluate(method.export(net), manifest, out, params), "train_seconds": round(seconds, 1),
            "epochs": config.epochs, "train_sketches": len(data.sketch_paths), "train_photos": len(data.photo_paths)}


def write(results: dict[str, Any]) -> None:
    atomic_write_json(RESULTS / "style_ablation.json", results)
    sets = list(dict.fromkeys(key for row in results.values() for key in row if isinstance(row[key], list)))
    lines = ["# Training on artwork styles: OpenMoji-ZS unseen categories (benchmarks/style_ablation.py)", "",
             "Per cell: mAP@all / FG Acc@1 of the unseen categories' sketches (sketch styles: also the mAP ratio to "
             "the model's own sketches of the same emoji). Photo styles (twemoji, fluent_flat, fluent_3d) and mixed: "
             "OpenMoji sketches against other artists' pictures; sketch styles: other sketches against OpenMoji's "
             "photos. fluent_3d and emojione_mono are never trained on. DSN: committed params.yaml plus the row's "
             "train.styles and epochs, seed 0, 2 CPU cores; training wall time on this machine.", "",
             "| set | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for name in sets:
        cells = []
        for row in results.values():
            value = row.get(name)
            cells.append("–" if value is None else " / ".join(f"{v:.3f}" for v in value[:2]) + (
                f" ({value[2]:.2f}×)" if len(value) > 2 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| training | " + " | ".join(f"{row['train_seconds']:.0f} s, {row['train_sketches']} sketches"
                                              if "train_seconds" in row else "–" for row in results.values()) + " |")
    atomic_write_text(RESULTS / "style_ablation.md", "\n".join(lines) + "\n")


def main() -> None:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="variant names (or name prefixes) to run")
    parser.add_argument("--again", action="store_true", help="re-run variants already in the results")
    args = parser.parse_args()
    params = Params.load()
    manifest = read_manifest(paths.prepared_dir(params.value("evaluate.dataset", str)))
    results_file = RESULTS / "style_ablation.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    chosen = [n for n in VARIANTS if not args.only or any(n.startswith(prefix) for prefix in args.only)]
    for name in chosen:
        if name in results and not args.again:
            continue
        with tempfile.TemporaryDirectory() as out:
            results[name] = run_variant(*VARIANTS[name], params, manifest, Path(out))
        print(name, json.dumps(results[name]), flush=True)
        write(results)


if __name__ == "__main__":
    main()
