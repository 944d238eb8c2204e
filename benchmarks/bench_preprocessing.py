"""Benchmark: sketch preprocessing (ink normalisation to the encoder's input) against the encoder's forward pass.

One run, one machine state, the served champion's sketch encoder: per image, at batch 32 and the machine's torch
threads, (1) the tensor forward (``encode_batch``: the baseline), (2) the first implementation of
``Preprocess.load`` (``tests/ink_reference.py``), (3) the current one; interleaved round by round, best of
``--rounds``. The outputs of (2) and (3) are compared pixel for pixel on every image. Then where each of the
current path's milliseconds go, step by step, at the dataset's size and at the sketch pad's (512 px). Goal of
issue 21: preprocessing <= 0.5x the forward pass. Writes benchmarks/results/preprocessing.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from models.checkpoint import load_model
from sbir import ink
from sbir.bundle_layout import read_meta
from sbir.io import atomic_write_json, atomic_write_text
from stages.model_store import Registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import ink_reference  # noqa: E402  (tests/: the first implementation, the reference)

RESULTS, BATCH, GOAL = ROOT / "benchmarks" / "results", 32, 0.5
SKETCHES = ROOT / "data" / "prepared" / "openmoji_zs" / "images" / "sketch"


def per_image_ms(step: Callable[[], object], images: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best / images * 1000


def steps(pictures: list[Image.Image], size: int, rounds: int) -> dict[str, float]:
    """Milliseconds per image of each step of ``sbir.ink.ink_strokes``, in order."""
    grays = [ink._gray(p) for p in pictures]
    stretched = [ink.stretch_contrast(g) for g in grays]
    framed = [ink.crop_to_ink(s) for s in stretched]
    smooth = [ndimage.gaussian_filter(f, sigma=max(0.5, f.shape[0] / 128)) < ink.STROKE_THRESHOLD for f in framed]
    def specks_removed(mask):
        return ink.without_specks(mask, max(2.0, 2e-4 * mask.size))

    kept = [specks_removed(s) for s in smooth]
    skeletons = [skeletonize(k) for k in kept]
    width, n = max(1.0, size / 40), len(pictures)
    return {"grey levels (PIL)": per_image_ms(lambda: [ink._gray(p) for p in pictures], n, rounds),
            "contrast stretch (blur + 2 percentiles)": per_image_ms(lambda: [ink.stretch_contrast(g) for g in grays], n, rounds),
            "crop to the ink": per_image_ms(lambda: [ink.crop_to_ink(s) for s in stretched], n, rounds),
            "stroke mask (blur)": per_image_ms(lambda: [ndimage.gaussian_filter(f, sigma=max(0.5, f.shape[0] / 128))
                                                        < ink.STROKE_THRESHOLD for f in framed], n, rounds),
            "specks removed (8-connected blobs)": per_image_ms(lambda: [specks_removed(s) for s in smooth], n, rounds),
            "skeleton (skimage, Zhang-Suen)": per_image_ms(lambda: [skeletonize(k) for k in kept], n, rounds),
            "redrawn at one width": per_image_ms(lambda: [ink.redraw_strokes(s, size, width) for s in skeletons], n, rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    version = read_meta(ROOT / "artifacts/serving/bundle")["champion"]["version"]
    model = load_model(Registry(ROOT / ".bentoml").model_path("sketch", version) / "checkpoint")
    preprocess = model.preprocess("sketch")
    pictures = [Image.open(p).convert("RGB") for p in sorted(SKETCHES.rglob("*.png"))[::4][:args.images]]
    size = preprocess.image_size
    identical = all(np.array_equal(preprocess.load(p).numpy(), ink_reference.load(p, size).numpy()) for p in pictures)
    batches = [pictures[i:i + BATCH] for i in range(0, len(pictures) - BATCH + 1, BATCH)]
    tensors = [torch.stack([preprocess.load(p) for p in batch]) for batch in batches]
    n = len(batches) * BATCH
    rows = {"forward": lambda: [model.encode_batch(t, "sketch") for t in tensors],
            "reference": lambda: [ink_reference.load(p, size) for batch in batches for p in batch],
            "current": lambda: [preprocess.load(p) for batch in batches for p in batch]}
    rows["forward"]()  # warm-up
    timings = {name: per_image_ms(step, n, args.rounds) for name, step in rows.items()}
    pad = [p.resize((512, 512), Image.Resampling.BILINEAR) for p in pictures[:32]]
    breakdown = {"dataset": steps(pictures[:128], size, args.rounds), "sketch_pad_512": steps(pad, size, 2)}
    pad_load = per_image_ms(lambda: [preprocess.load(p) for p in pad], len(pad), 2)
    forward = timings["forward"]
    result = {"benchmark": "preprocessing", "model": f"{read_meta(ROOT / 'artifacts/serving/bundle')['champion']['method']} "
              f"{version}", "input_size": size, "source_size": list(pictures[0].size), "images": n,
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "ms_per_image": timings, "ratio_to_forward": {k: v / forward for k, v in timings.items()},
              "speedup_current_vs_reference": timings["reference"] / timings["current"],
              "identical_outputs": identical, "sketch_pad_512_ms_per_image": pad_load, "breakdown_ms": breakdown,
              "goal": {"preprocessing_over_forward_at_most": GOAL, "met": timings["current"] / forward <= GOAL}}
    atomic_write_json(args.out / "preprocessing.json", result)
    atomic_write_text(args.out / "preprocessing.md", markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    t, ratio = r["ms_per_image"], r["ratio_to_forward"]
    lines = ["# Sketch preprocessing vs the forward pass", "",
             f"`python benchmarks/bench_preprocessing.py`: {r['model']}, {r['images']} OpenMoji-ZS sketches "
             f"({r['source_size'][0]} px) to {r['input_size']} px, batch {BATCH}, {r['torch_threads']} torch threads, "
             f"{r['cpu_count']} cores, best of the rounds. Outputs of the current and the first implementation "
             f"identical on every image: **{r['identical_outputs']}**.", "",
             f"Goal: preprocessing <= {GOAL}x the forward pass: **{'met' if r['goal']['met'] else 'not met'}** "
             f"({ratio['current']:.2f}x).", "", "| path | ms / image | / forward |", "|---|---:|---:|"]
    for name, label in (("forward", "tensor forward (`encode_batch`), the baseline"),
                        ("reference", "`Preprocess.load`, first implementation"), ("current", "`Preprocess.load`, now")):
        lines.append(f"| {label} | {t[name]:.3f} | {ratio[name]:.2f} |")
    lines += ["", f"Current over first: {r['speedup_current_vs_reference']:.2f}x faster. A 512 px sketch pad drawing: "
              f"{r['sketch_pad_512_ms_per_image']:.2f} ms per image.", "", "## Where the milliseconds go (current)", "",
              "| step | dataset size | 512 px |", "|---|---:|---:|"]
    for step, ms in r["breakdown_ms"]["dataset"].items():
        lines.append(f"| {step} | {ms:.3f} | {r['breakdown_ms']['sketch_pad_512'][step]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
