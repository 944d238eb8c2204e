"""Analysis: how far is zero-shot from having seen the test categories? (a reference for the mAP target)

Splits OpenMoji-ZS's unseen test items in two halves per category (a photo with its sketches stays together;
seeded). On half B it evaluates:

- ``zero_shot``: the pipeline's model (trained on the seen categories only; ``--checkpoint``);
- ``seen``: the same method, configuration and budget (the ``params.yaml`` defaults), trained on the seen
  categories *plus half A of the unseen ones* — no longer zero-shot; what this architecture and budget reach
  when the test categories are in training, which a zero-shot method of the same family is not expected to beat;
- ``baseline_hog`` for scale.

Category mAP@all and fine-grained Acc@1 over the same queries and gallery (half B) for all three.
Writes benchmarks/results/seen_reference.{json,md}. ``seen_train_seconds`` is the training alone: the engine's
decoding of the images into memory (``StepTimes.load``) is left out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.checkpoint import load_model
from models.data import read_split
from models.embed import EmbedParams, embed_dataset
from models.engine import TrainSection, train
from models.registry import create_model
from sbir import paths
from sbir.config import Params
from sbir.embeddings import read_embeddings
from sbir.env import apply_offline_defaults
from sbir.logs import setup_logging
from sbir.manifest import Manifest, read_manifest
from stages.evaluate import EvaluateParams, evaluate_embeddings
from stages.train import method_settings

RESULTS = Path(__file__).parent / "results"
METHOD = "dsn"
KEYS = {"mAP@all": "map_all/sklearn/query", "mAP@all VOC/class": "map_all/voc/class",
        "mAP@200 (ZSE)": "map_200/sake/query", "FG Acc@1": "fg/acc@1/gallery", "FG Acc@5": "fg/acc@5/gallery"}


def split_unseen(manifest: Manifest, seed: int) -> tuple[Manifest, Manifest]:
    """(train = seen train + unseen half A as split 'train'; test = unseen half B as 'test_unseen')."""
    frame = manifest.frame
    unseen = frame[frame["split"] == "test_unseen"]
    photos = unseen[unseen["domain"] == "photo"]
    rng = np.random.default_rng(seed)
    half_a: set[str] = set()
    for _, group in photos.groupby("category", sort=True):
        ids = sorted(group["instance_id"].dropna().astype(str))
        half_a.update(rng.permutation(ids)[: len(ids) // 2].tolist())
    in_a = unseen["instance_id"].astype(str).isin(half_a)
    train = pd.concat([frame[frame["split"] == "train"], unseen[in_a].assign(split="train")], ignore_index=True)
    test = unseen[~in_a].reset_index(drop=True)
    return (Manifest(train, manifest.dataset, manifest.image_root, manifest.extra),
            Manifest(test, manifest.dataset, manifest.image_root, manifest.extra))


def main() -> None:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=paths.checkpoint_dir(METHOD),
                        help="the zero-shot model (run `dvc repro train` first)")
    parser.add_argument("--seed", type=int, default=0, help="which half of each unseen category is seen")
    args = parser.parse_args()
    all_params = Params.load()
    settings = all_params.read(TrainSection, "train")
    method, config = method_settings(all_params, METHOD)
    manifest = read_manifest(paths.prepared_dir(settings.dataset))
    train_manifest, test_manifest = split_unseen(manifest, args.seed)
    params = all_params.replaced("evaluate", {"generalised": False, "exclude_trained_categories": False}).read(
        EvaluateParams, "evaluate")
    embed_params = all_params.replaced("embed", {"workers": 2}).read(EmbedParams, "embed")

    rows: dict[str, dict] = {}
    data = read_split(train_manifest, "train")
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        net, times = train(method, config, settings.runtime, data, Path(state), progress=False)
        seen_seconds = time.perf_counter() - started - times.load
    evaluated = {"baseline_hog": create_model("baseline_hog", all_params.section("baseline_hog"),
                                                 f"{all_params.source}: baseline_hog"),
                 "zero_shot": load_model(args.checkpoint), "seen": method.export(net)}
    with tempfile.TemporaryDirectory() as out:
        for name, model in evaluated.items():
            embed_dataset(model, test_manifest, Path(out) / name / "embeddings", embed_params, progress=False)
            document = evaluate_embeddings(read_embeddings(Path(out) / name / "embeddings", test_manifest),
                                           test_manifest, params, Path(out) / name / "eval", None, model)
            rows[name] = {label: round(float(document["zero_shot"][key]), 4) for label, key in KEYS.items()}
            rows[name]["n_queries"] = document["zero_shot"]["n_queries"]
            rows[name]["n_gallery"] = document["zero_shot"]["n_gallery"]
    facts = {"seen_train_sketches": len(data.sketch_paths), "seen_categories": data.num_classes,
             "seen_steps": times.steps, "seen_train_seconds": round(seen_seconds, 1),
             "unseen_categories": int(test_manifest.frame["category"].nunique())}
    print(json.dumps({"split_seed": args.seed, "facts": facts, "rows": rows}, indent=2))
    write({args.seed: {"facts": facts, "rows": rows}})


def write(new: dict[int, dict]) -> None:
    """Results accumulate by split seed: a run replaces its own seed's entry and keeps the others."""
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / "seen_reference.json"
    splits = json.loads(target.read_text())["splits"] if target.is_file() else {}
    splits.update({str(seed): value for seed, value in new.items()})
    target.write_text(json.dumps({"splits": splits}, indent=2) + "\n")
    columns = list(KEYS)
    lines = ["# Zero-shot against having seen the test categories (OpenMoji-ZS, unseen half B)", "",
             "Each unseen category's items are split in two halves (a photo with its sketches stays together; "
             "split seed in the first column). Evaluated on half B alone (queries and gallery). `seen`: the "
             "default configuration and budget trained on the 70 seen categories plus half A of the unseen ones "
             "— no longer zero-shot. Written by `benchmarks/seen_reference.py`.", "",
             "| split | model | " + " | ".join(columns) + " | queries | gallery |",
             "|---|---|" + "---|" * (len(columns) + 2)]
    for seed, split in sorted(splits.items()):
        for name, row in split["rows"].items():
            lines.append(f"| {seed} | {name} | " + " | ".join(str(row[c]) for c in columns)
                         + f" | {row['n_queries']} | {row['n_gallery']} |")
    lines.append("")
    for seed, split in sorted(splits.items()):
        facts = split["facts"]
        lines.append(f"- split {seed}: `seen` trained on {facts['seen_categories']} categories, "
                     f"{facts['seen_train_sketches']} sketches, {facts['seen_steps']} steps in "
                     f"{facts['seen_train_seconds']} s.")
    (RESULTS / "seen_reference.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
