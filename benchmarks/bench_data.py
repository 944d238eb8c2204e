"""Benchmark: streaming data at scale — flat memory and the share of step time spent waiting for data.

Generates a 30,000-image manifest at 224 px (15,000 photos of filled shapes, 15,000 sketch outlines linked to
them, 100 categories), then, on this machine:
1. trains a ResNet-18 (whole network, 224 px, batch 32 sketch–photo pairs) for ``--steps`` steps on it, images
   streamed by DataLoader workers (``cache: none``): the engine's own split of step time into waiting for data
   and compute, and peak memory (summed PSS) of the process tree sampled every 0.5 s;
2. embeds ``--embed`` of its images through the same network, memory sampled each batch.
Baseline, in the same run: the memory an in-memory uint8 cache of the split would need at 224 px, and the first
sample of each phase (peak growth after warm-up is what "flat" means).
Writes benchmarks/results/data_streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from PIL import Image, ImageDraw

from sbir.env import apply_offline_defaults
from sbir.io import atomic_write_json, atomic_write_text
from sbir.logs import setup_logging

RESULTS = Path(__file__).parent / "results"


def _draw(index: int, size: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """A photo (filled, coloured shapes) and its sketch (their outlines), at ``size``."""
    photo = Image.new("RGB", (size, size), "white")
    sketch = Image.new("L", (size, size), 255)
    for _ in range(3):
        x0, y0 = rng.integers(0, size * 2 // 3, 2)
        width, height = rng.integers(size // 6, size // 3, 2)
        x1, y1 = x0 + width, y0 + height
        box = (int(x0), int(y0), int(x1), int(y1))
        colour = tuple(int(c) for c in rng.integers(0, 220, 3))
        if index % 2:
            ImageDraw.Draw(photo).ellipse(box, fill=colour)
            ImageDraw.Draw(sketch).ellipse(box, outline=0, width=3)
        else:
            ImageDraw.Draw(photo).rectangle(box, fill=colour)
            ImageDraw.Draw(sketch).rectangle(box, outline=0, width=3)
    return photo, sketch


def _write_chunk(args: tuple[Path, int, int, int]) -> list[dict]:
    root, start, stop, size = args
    rows = []
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        photo, sketch = _draw(i, size, rng)
        category = f"c{i % 100:03d}"
        for domain, image in (("photo", photo), ("sketch", sketch)):
            relative = f"{domain}/{category}/{i:05d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative, compress_level=1)
            rows.append({"path": relative, "domain": domain, "category": category, "instance_id": f"{i:05d}",
                         "split": "train", "content_hash": f"{i:05d}{domain}"})
    return rows


def generate(root: Path, pairs: int, size: int) -> Path:
    """The manifest of ``pairs`` photo–sketch pairs (made once; reused when present)."""
    from concurrent.futures import ProcessPoolExecutor

    from sbir.manifest import MANIFEST_FILE, write_manifest

    if (root / MANIFEST_FILE).is_file():
        return root
    chunks = [(root, a, min(a + 500, pairs), size) for a in range(0, pairs, 500)]
    with ProcessPoolExecutor(2) as pool:
        rows = [row for chunk in pool.map(_write_chunk, chunks) for row in chunk]
    write_manifest(pd.DataFrame(rows), root, dataset="generated", image_root=".")
    return root


class MemorySampler:
    """Memory of this process and its children (DataLoader workers), sampled on demand: the sum of their PSS
    (proportional set size), so pages the forked workers share with the parent are not counted twice."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.samples: list[float] = []
        self.started = time.perf_counter()
        self.times: list[float] = []

    def __call__(self, *_: object) -> None:
        total = self.process.memory_full_info().pss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_full_info().pss
            except psutil.Error:
                pass
        self.samples.append(total / 2**20)
        self.times.append(time.perf_counter() - self.started)

    def summary(self) -> dict[str, object]:
        """Peaks of the first and second half of the run: memory that grows with the images seen (a leak, or
        data held) makes the second half's peak larger; a flat run has equal peaks."""
        half = len(self.samples) // 2
        first, second = max(self.samples[:half]), max(self.samples[half:])
        series = [[round(t, 1), round(m, 1)] for t, m in zip(self.times, self.samples)]
        return {"start_mb": round(self.samples[0], 1), "peak_first_half_mb": round(first, 1),
                "peak_second_half_mb": round(second, 1), "peak_mb": round(max(first, second), 1),
                "second_half_vs_first_pct": round(100 * (second - first) / first, 2), "samples": len(self.samples),
                "series_seconds_mib": series[:: max(1, len(series) // 60)]}


def main() -> None:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=15_000, help="photo–sketch pairs (images = 2 × pairs)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--embed", type=int, default=8_000, help="images to embed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "zssbir-bench-data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from models.data import read_split
    from models.dsn import DSN, DSNConfig
    from models.embed import embed_paths
    from models.engine import RuntimeConfig, TrainConfig, train
    from sbir.config import Params
    from sbir.manifest import read_manifest

    # params.yaml's dsn and train.runtime sections, with only the settings this benchmark measures changed
    params = (Params.load()
              .replaced("dsn.model", {"image_size": args.size, "feature_level": None, "pool": "avg",
                                      "photo_edges": False})
              .replaced("dsn.train", {"epochs": 1, "batch_size": 32})
              .replaced("train.runtime", {"num_threads": 2, "checkpoint_every": 10**9, "workers": args.workers,
                                          "prefetch": 2, "cache": "none"}))
    model_config = params.read(DSNConfig, "dsn.model")  # read (and checked) before the minutes of generating
    config = params.read(TrainConfig, "dsn.train")
    runtime = params.read(RuntimeConfig, "train.runtime")
    started = time.perf_counter()
    manifest = read_manifest(generate(args.root / f"{args.pairs}x{args.size}", args.pairs, args.size))
    generate_seconds = time.perf_counter() - started
    data = read_split(manifest, "train")
    method = DSN(model_config)
    train_memory = MemorySampler()
    sampler = threading.Event()

    def poll() -> None:  # memory every 0.5 s while training (the engine's hooks fire per epoch)
        while not sampler.wait(0.5):
            train_memory()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as state:
        started = time.perf_counter()
        net, times = train(method, config, runtime, data, Path(state), progress=True, stop_after_steps=args.steps)
        train_seconds = time.perf_counter() - started
    sampler.set()
    thread.join()

    model = method.export(net)
    paths = data.photo_paths[: args.embed // 2] + data.sketch_paths[: args.embed - args.embed // 2]
    embed_memory = MemorySampler()
    original = model.encode_batch

    def encode_and_sample(batch: torch.Tensor, domain: str) -> np.ndarray:
        embed_memory()
        return original(batch, domain)

    model.encode_batch = encode_and_sample  # type: ignore[method-assign]
    started = time.perf_counter()
    half = len(paths) // 2
    vectors = np.concatenate([embed_paths(model, paths[:half], "photo", 64, args.workers, 2, progress=True),
                              embed_paths(model, paths[half:], "sketch", 64, args.workers, 2, progress=True)])
    embed_seconds = time.perf_counter() - started

    images = len(manifest.frame)
    result = {
        "machine": {"cpu_count": psutil.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "manifest": {"images": images, "size": args.size, "generate_seconds": round(generate_seconds, 1)},
        "cache_would_need_mb": round(data.bytes_at(args.size) / 2**20, 1),
        "train": {"steps": times.steps, "batch_pairs": config.batch_size, "workers": args.workers,
                  "seconds": round(train_seconds, 1),
                  "seconds_per_step": round((times.data + times.compute) / times.steps, 3),
                  "data_share_of_step": round(times.data_share, 4), "memory": train_memory.summary()},
        "embed": {"images": len(vectors), "seconds": round(embed_seconds, 1),
                  "images_per_second": round(len(vectors) / embed_seconds, 1), "memory": embed_memory.summary()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "data_streaming.json", result)
    t, e = result["train"], result["embed"]
    lines = [
        "# Streaming data at scale (benchmarks/bench_data.py)", "",
        f"Generated manifest: {images:,} images at {args.size} px ({args.pairs:,} photos + {args.pairs:,} linked "
        f"sketches, 100 categories). Machine: {psutil.cpu_count()} CPU cores, torch {torch.__version__}.", "",
        "| phase | work | wall time | data share of a step | memory (PSS) at start → peak 1st half → peak 2nd half (MiB) | 2nd half vs 1st |",
        "|---|---|---|---|---|---|",
        f"| train (ResNet-18, {args.size} px, {t['batch_pairs']} pairs/step, {t['workers']} workers, streamed) | "
        f"{t['steps']} steps, {t['seconds_per_step']} s/step | {t['seconds']} s | **{100 * t['data_share_of_step']:.1f} %** | "
        f"{t['memory']['start_mb']} → {t['memory']['peak_first_half_mb']} → {t['memory']['peak_second_half_mb']} | {t['memory']['second_half_vs_first_pct']:+} % |",
        f"| embed (same network, batch 64) | {e['images']:,} images, {e['images_per_second']} img/s | {e['seconds']} s | – | "
        f"{e['memory']['start_mb']} → {e['memory']['peak_first_half_mb']} → {e['memory']['peak_second_half_mb']} | {e['memory']['second_half_vs_first_pct']:+} % |",
        "",
        f"Baseline in the same run: an in-memory uint8 cache of this split at {args.size} px would need "
        f"**{result['cache_would_need_mb']:,} MiB** on its own; the streamed run's whole process tree peaked at "
        f"{t['memory']['peak_mb']} MiB ({t['memory']['peak_mb'] / result['cache_would_need_mb']:.2f}× the cache alone).",
        "Memory is the summed PSS of the process and its DataLoader workers, sampled every 0.5 s while training "
        "and at every batch while embedding (series in the JSON). Flat = the second half of a run peaks no higher "
        "than the first: memory does not grow with the number of images streamed.",
    ]
    atomic_write_text(args.out / "data_streaming.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
