"""Ranking with a model's own pair scores, beside its embeddings (ZSE-SBIR's relation network):

- ``rerank``: our fast option, each query's embedding top-k re-scored by the pair scorer and kept above the rest;
- ``score_every_pair``: the paper's RN mode, every sketch against every photo, a block of ``block`` sketches ×
  ``block`` photos at a time, so what it holds besides the (queries, gallery) result is one block's images and
  the model's bounded token cache, whatever the gallery's size.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from models.data import load_image
from models.interface import GridScorer, PairScorer
from sbir.index import top_k
from sbir.manifest import Manifest

log = logging.getLogger("models.pair_ranking")


def _images(model: PairScorer | GridScorer, manifest: Manifest, rows: pd.DataFrame, domain: str) -> torch.Tensor:
    preprocess = model.preprocess(domain)  # type: ignore[union-attr]
    return torch.stack([load_image(manifest.resolve(path), preprocess) for path in rows["path"]])


def rerank(model: PairScorer, manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame,
           sketch_emb: np.ndarray, photo_emb: np.ndarray, k: int) -> np.ndarray:
    """Embedding scores with each query's top-k re-scored by the model's pair scorer and kept above the rest."""
    started = time.perf_counter()
    log.info("re-scoring the top %d of %d queries with the pair scorer", k, len(sketches))
    scores = sketch_emb @ photo_emb.T
    _, top = top_k(sketch_emb, photo_emb, k)
    out = scores.copy()
    for query, row in enumerate(top):
        sketch = _images(model, manifest, sketches.iloc[[query]], "sketch")
        gallery = _images(model, manifest, photos.iloc[row], "photo")
        pair_scores = np.asarray(model.score_pairs(sketch.expand(len(row), -1, -1, -1), gallery), dtype=np.float32)
        out[query, row] = scores[query].max() + 1 + pair_scores - pair_scores.min()
    log.info("re-scored %d pairs in %.1f s", top.size, time.perf_counter() - started)
    return out


def score_every_pair(model: GridScorer, manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame,
                     block: int = 256) -> np.ndarray:
    """(queries, gallery) float32 scores of the model's grid scorer over every sketch–photo pair."""
    started = time.perf_counter()
    log.info("scoring all %d x %d pairs with the relation network", len(sketches), len(photos))
    out = np.empty((len(sketches), len(photos)), dtype=np.float32)
    for first_sketch in range(0, len(sketches), block):
        sketch_rows = slice(first_sketch, first_sketch + block)
        sketch_images = _images(model, manifest, sketches.iloc[sketch_rows], "sketch")
        for first_photo in range(0, len(photos), block):
            photo_rows = slice(first_photo, first_photo + block)
            photo_images = _images(model, manifest, photos.iloc[photo_rows], "photo")
            out[sketch_rows, photo_rows] = model.score_grid(sketch_images, photo_images)
    log.info("scored %d pairs in %.1f s", out.size, time.perf_counter() - started)
    return out
