"""Embed images through the model interface: decoded in DataLoader workers, a bounded number of batches ahead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.data import image_loader
from models.interface import RetrievalModel


def embed_paths(model: RetrievalModel, paths: Sequence[Path], domain: str, batch_size: int = 64, workers: int = 2,
                prefetch: int = 2, progress: bool = True) -> np.ndarray:
    """(len(paths), embedding_dim) float32 unit rows, in the order of ``paths``.

    Workers decode to the uint8 input the domain's encoder declares; the model normalises each batch as a tensor.
    At most ``workers × prefetch`` batches are decoded ahead, so memory does not grow with the number of images.
    """
    if not paths:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    loader = image_loader(paths, model.preprocess(domain), batch_size, workers=workers, prefetch=prefetch)
    out = [model.encode_batch(batch, domain) for batch in tqdm(loader, desc=f"embedding {domain}s", unit="batch",
                                                                 disable=not progress)]
    return np.concatenate(out).astype(np.float32, copy=False)
