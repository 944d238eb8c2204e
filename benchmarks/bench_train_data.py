"""Benchmark: is the data pipeline the training bottleneck? (share of step time spent waiting for data)

Measures, in one run on the prepared OpenMoji-ZS train split with the ``train`` params:
- the engine's own split of step time into data preparation (in-memory uint8 tensors → batched augmentation)
  and compute (forward, backward, optimiser), over ``--steps`` steps;
- the baseline: preparing the same batches the straightforward way, decoding every PNG from disk with Pillow
  at each step (as a per-item Dataset would without workers).
Prints the data share of a step and the speed-up of in-memory batches over per-step decoding; writes
benchmarks/results/train_data.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from models.data import PairSampler, _load_rgb, augment, load_paired_images
from models.engine import train
from sbir.config import load_params, section
from sbir.manifest import read_manifest
from stages.train import parse_config

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    dataset, config = parse_config(section(load_params(), "train"), "train")
    manifest = read_manifest(Path("data/prepared") / dataset)
    started = time.perf_counter()
    data = load_paired_images(manifest, "train", config.model.image_size, progress=False)
    load_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as state:
        _, times = train(config, data, Path(state), progress=False, stop_after_steps=args.steps)
    data_per_step = times.data / times.steps
    compute_per_step = times.compute / times.steps

    # baseline: decode each batch's PNGs from disk at every step
    sketches = manifest.select(split="train", domain="sketch").reset_index(drop=True)
    photos = manifest.select(split="train", domain="photo").reset_index(drop=True)
    sampler = PairSampler(data, config.batch_size, config.seed, config.sketches_per_category)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(args.steps):
        s_idx, p_idx, _ = sampler.batch(step // sampler.steps_per_epoch, step % sampler.steps_per_epoch)
        size = config.model.image_size
        s = torch.stack([torch.from_numpy(_load_rgb(manifest.resolve(sketches["path"][i]), size)) for i in s_idx.tolist()])
        p = torch.stack([torch.from_numpy(_load_rgb(manifest.resolve(photos["path"][i]), size)) for i in p_idx.tolist()])
        augment(s, generator)
        augment(p, generator, colour=True)
    naive_per_step = (time.perf_counter() - started) / args.steps

    result = {
        "steps": times.steps, "batch_size": config.batch_size, "image_size": config.model.image_size,
        "backbone": config.model.backbone, "threads": config.num_threads,
        "load_split_into_memory_seconds": round(load_seconds, 2),
        "data_seconds_per_step": round(data_per_step, 4), "compute_seconds_per_step": round(compute_per_step, 4),
        "data_share_of_step": round(times.data_share, 4),
        "baseline_decode_per_step_seconds": round(naive_per_step, 4),
        "baseline_data_share_of_step": round(naive_per_step / (naive_per_step + compute_per_step), 4),
        "speedup_in_memory_vs_decode": round(naive_per_step / data_per_step, 2),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_data.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "train_data.md").write_text(
        "# Training data pipeline\n\n"
        f"{config.model.backbone} at {config.model.image_size} px, batch {config.batch_size} sketch–photo pairs, "
        f"{config.num_threads} threads, {times.steps} steps.\n\n"
        "| pipeline | data s/step | share of step |\n|---|---|---|\n"
        f"| in memory + batched augmentation (ours) | {data_per_step:.4f} | {times.data_share:.1%} |\n"
        f"| decode PNGs every step (baseline) | {naive_per_step:.4f} | {result['baseline_data_share_of_step']:.1%} |\n\n"
        f"Compute per step: {compute_per_step:.3f} s. In-memory batches are {result['speedup_in_memory_vs_decode']}× "
        f"faster to prepare; loading the split once takes {load_seconds:.1f} s.\n")


if __name__ == "__main__":
    main()
