"""Benchmark: the `train` engine on a CUDA GPU — bf16 autocast against fp32, determinism, and more compute.

Run where a GPU is (falls back to the CPU for a smoke run with ``--stop-after-steps``), on the prepared
OpenMoji-ZS and the ``params.yaml`` defaults. In one process it trains and evaluates (unseen categories):

1. ``default/fp32``: the default with autocast off — the baseline of the speed ratio;
2. ``default/bf16``: the default as the stage runs it on CUDA (``amp: true``), twice, and compares the
   two runs' weights (deterministic on the GPU too?);
3. variants with more compute than 2 CPU cores allow (larger images, whole backbones, more epochs): do
   the issue's accuracy targets come within reach when compute is not the limit?

Prints one JSON line per run and writes ``train_gpu.json`` and ``train_gpu.md`` to ``--results``
(default ``benchmarks/results``), rewritten after every run so that a cut-off run still leaves its part.

Every run trains from images held in memory (``train.runtime.cache: memory``); the decoding into memory
(``StepTimes.load``) is left out of ``train_seconds``, which is the training alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.data import TrainSplit, read_split
from models.embed import EmbedParams, embed_dataset
from models.engine import RuntimeConfig, TrainConfig, TrainSection, setup_distributed, train
from models.method import Method
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

# name -> (train overrides, model overrides); every run starts from the params.yaml default
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default/fp32": ({"amp": False}, {}),
    "default/bf16": ({}, {}),
    "default/bf16/repeat": ({}, {}),
    "128px/layer2": ({}, {"image_size": 128}),
    "128px/layer3/40ep": ({"epochs": 40}, {"image_size": 128, "feature_level": 3}),
    "128px/whole-resnet18/avg/60ep": ({"epochs": 60}, {"image_size": 128, "feature_level": None, "pool": "avg"}),
    "default/bf16/60ep": ({"epochs": 60}, {}),
    "128px/whole-resnet50/avg/40ep": ({"epochs": 40}, {"image_size": 128, "feature_level": None, "pool": "avg",
                                                       "backbone": "timm:resnet50"}),
}
KEYS = {"mAP@all": "map_all/sklearn/query", "mAP@all VOC/class": "map_all/voc/class",
        "FG Acc@1": "fg/acc@1/gallery", "FG Acc@5": "fg/acc@5/gallery"}


def configure(params: Params, train_overrides: dict[str, Any],
              model_overrides: dict[str, Any]) -> tuple[Method, TrainConfig]:
    """The method of params.yaml's ``dsn`` section with its model and optimisation settings changed (checked
    like the stage checks them)."""
    return method_settings(params.replaced(f"{METHOD}.train", train_overrides)
                           .replaced(f"{METHOD}.model", model_overrides), METHOD)


def run_variant(name: str, method: Method, config: TrainConfig, runtime: RuntimeConfig, data: TrainSplit,
                manifest: Manifest, stop_after_steps: int | None, out_dir: Path, embed: EmbedParams,
                evaluation: EvaluateParams) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train from scratch, evaluate zero-shot; returns the row and the trained weights (on the CPU)."""
    ctx = setup_distributed()
    with tempfile.TemporaryDirectory() as state:
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        net, times = train(method, config, runtime, data, Path(state), progress=False,
                           stop_after_steps=stop_after_steps, ctx=ctx)
        seconds = time.perf_counter() - started - times.load
    weights = {key: value.detach().float().cpu() for key, value in net.state_dict().items()}
    folder = out_dir / name.replace("/", "_")
    model = method.export(net, ctx.device)
    embed_dataset(model, manifest, folder / "embeddings", embed, progress=False)
    document = evaluate_embeddings(read_embeddings(folder / "embeddings", manifest), manifest, evaluation,
                                   folder / "eval", {"dataset": manifest.dataset, "train_categories": data.categories},
                                   model)
    zero_shot = document["zero_shot"]
    model_config = method.config
    row = {"run": name, "device": str(ctx.device), "amp": config.amp and ctx.device.type == "cuda",
           "epochs": config.epochs, "steps": times.steps, "train_seconds": round(seconds, 1),
           "seconds_per_step": round((times.data + times.compute) / max(times.steps, 1), 5),
           "data_share_of_step": round(times.data_share, 4),
           "backbone": model_config.backbone, "image_size": model_config.image_size,
           "feature_level": model_config.feature_level, "pool": model_config.pool,
           **{label: round(float(zero_shot[key]), 4) for label, key in KEYS.items()}}
    return row, weights


def warm_up(params: Params, runtime: RuntimeConfig, data: TrainSplit) -> None:
    """A few steps in each precision first, so that no timed run pays for kernel selection and start-up."""
    for amp in (False, True):
        with tempfile.TemporaryDirectory() as state:
            train(*configure(params, {"amp": amp}, {}), runtime, data, Path(state), progress=False,
                  stop_after_steps=20, ctx=setup_distributed())


def write(rows: list[dict[str, Any]], facts: dict[str, Any], results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "train_gpu.json").write_text(json.dumps({"facts": facts, "runs": rows}, indent=2) + "\n")
    columns = ["run", "steps", "train_seconds", "seconds_per_step", "data_share_of_step", *KEYS]
    lines = ["# The train engine on a GPU", "",
             f"{facts['device_name']}, torch {facts['torch']}, {facts['threads']} CPU threads for the batch "
             "augmentation; OpenMoji-ZS unseen categories. Written by `benchmarks/bench_train_gpu.py`.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(column)) for column in columns) + " |" for row in rows]
    for label, value in facts.get("findings", {}).items():
        lines += ["", f"- {label}: {value}"]
    (results / "train_gpu.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--stop-after-steps", type=int, default=None, help="smoke run: cut every run short")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    params = Params.load()
    settings = params.read(TrainSection, "train")
    for name in args.runs:  # every run's settings checked before any work (building a method is cheap)
        configure(params, *VARIANTS[name])
    embed = params.replaced("embed", {"workers": 4}).read(EmbedParams, "embed")  # 4 decoding processes
    evaluation = params.read(EvaluateParams, "evaluate")
    # images in memory; --threads decoding processes
    runtime = params.replaced("train.runtime", {"num_threads": args.threads, "workers": args.threads,
                                                "cache": "memory"}).read(RuntimeConfig, "train.runtime")
    manifest = read_manifest(paths.prepared_dir(settings.dataset))
    data = read_split(manifest, "train")
    device = setup_distributed().device
    facts: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": args.threads, "findings": {}}
    rows: list[dict[str, Any]] = []
    trained: dict[str, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as evals:
        warm_up(params, runtime, data)
        for name in args.runs:
            variant, config = configure(params, *VARIANTS[name])
            row, weights = run_variant(name, variant, config, runtime, data, manifest, args.stop_after_steps,
                                       Path(evals), embed, evaluation)
            rows.append(row)
            trained[name] = weights
            print(json.dumps(row), flush=True)
            findings = facts["findings"]
            if "default/fp32" in trained and "default/bf16" in trained and name in ("default/fp32", "default/bf16"):
                fp32, bf16 = (next(r for r in rows if r["run"] == n) for n in ("default/fp32", "default/bf16"))
                findings["bf16 autocast speed-up over fp32 (same GPU, same run)"] = \
                    f"{fp32['train_seconds'] / bf16['train_seconds']:.2f}x"
            if name == "default/bf16/repeat" and "default/bf16" in trained:
                first = trained["default/bf16"]
                largest = max(float((first[k] - weights[k]).abs().max()) for k in first)
                findings["two bf16 runs, largest weight difference"] = \
                    "0 (bit-identical)" if largest == 0 else f"{largest:.3g}"
            write(rows, facts, args.results)
    print(json.dumps(facts["findings"]), file=sys.stderr)


if __name__ == "__main__":
    main()
