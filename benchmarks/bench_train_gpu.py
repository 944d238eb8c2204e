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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.data import PairedImages, load_paired_images
from models.dsn import as_retrieval_model
from models.engine import TrainConfig, setup_distributed, train
from sbir.config import load_params, section
from sbir.manifest import read_manifest
from stages.evaluate import EvaluateParams, evaluate_model
from stages.train import parse_config

RESULTS = Path(__file__).parent / "results"

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


def configure(base: TrainConfig, train_overrides: dict[str, Any], model_overrides: dict[str, Any],
              threads: int) -> TrainConfig:
    model = dataclasses.replace(base.model, **model_overrides)
    return dataclasses.replace(base, **{"num_threads": threads, **train_overrides, "model": model})


def run_variant(name: str, config: TrainConfig, data: PairedImages, manifest, stop_after_steps: int | None,
                out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train from scratch, evaluate zero-shot; returns the row and the trained weights (on the CPU)."""
    ctx = setup_distributed()
    with tempfile.TemporaryDirectory() as state:
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        net, times = train(config, data, Path(state), progress=False, stop_after_steps=stop_after_steps, ctx=ctx)
        seconds = time.perf_counter() - started
    weights = {key: value.detach().float().cpu() for key, value in net.state_dict().items()}
    params = EvaluateParams(workers=4)
    document = evaluate_model(as_retrieval_model(net, ctx.device), manifest, params, out_dir / name.replace("/", "_"),
                              trained={"dataset": manifest.dataset, "train_categories": data.categories},
                              progress=False)
    zero_shot = document["zero_shot"]
    row = {"run": name, "device": str(ctx.device), "amp": config.amp and ctx.device.type == "cuda",
           "epochs": config.epochs, "steps": times.steps, "train_seconds": round(seconds, 1),
           "seconds_per_step": round((times.data + times.compute) / max(times.steps, 1), 5),
           "data_share_of_step": round(times.data_share, 4),
           "backbone": config.model.backbone, "image_size": config.model.image_size,
           "feature_level": config.model.feature_level, "pool": config.model.pool,
           **{label: round(float(zero_shot[key]), 4) for label, key in KEYS.items()}}
    return row, weights


def warm_up(base: TrainConfig, threads: int, cache: dict[int, PairedImages], manifest) -> None:
    """A few steps in each precision first, so that no timed run pays for kernel selection and start-up."""
    size = base.model.image_size
    cache[size] = load_paired_images(manifest, "train", size, workers=threads, progress=False)
    for amp in (False, True):
        with tempfile.TemporaryDirectory() as state:
            train(configure(base, {"amp": amp}, {}, threads), cache[size], Path(state), progress=False,
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--stop-after-steps", type=int, default=None, help="smoke run: cut every run short")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    dataset, base = parse_config(section(load_params(), "train"), "train")
    manifest = read_manifest(Path("data/prepared") / dataset)
    device = setup_distributed().device
    facts: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": args.threads, "findings": {}}
    cache: dict[int, PairedImages] = {}
    rows: list[dict[str, Any]] = []
    trained: dict[str, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as evals:
        warm_up(base, args.threads, cache, manifest)
        for name in args.runs:
            config = configure(base, *VARIANTS[name], threads=args.threads)
            size = config.model.image_size
            if size not in cache:
                cache[size] = load_paired_images(manifest, "train", size, workers=args.threads, progress=False)
            row, weights = run_variant(name, config, cache[size], manifest, args.stop_after_steps, Path(evals))
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
