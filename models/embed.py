"""Embed a manifest's images through the model interface, in batches, with bounded memory."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from models.interface import RetrievalModel


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy()


def embed_images(model: RetrievalModel, paths: Sequence[Path], domain: str, batch_size: int = 64,
                 workers: int = 2, progress: bool = True) -> np.ndarray:
    """(len(paths), d) float32 embeddings; images are decoded by a thread pool one batch ahead."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = pool.map(lambda chunk: [_load(p) for p in chunk], batches)
        for images in tqdm(pending, total=len(batches), desc=f"embedding {domain}s", unit="batch",
                           disable=not progress):
            out.append(model.encode(images, domain))
    if not out:
        return np.zeros((0, getattr(model, "embedding_dim", 0)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
