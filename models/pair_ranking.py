"""Ranking with a model's own pair scores, beside its embeddings (ZSE-SBIR's relation network):

- ``rerank``: our fast option, each query's embedding top-k re-scored by the pair scorer and kept above the rest;
- ``score_every_pair``: the paper's RN mode, every sketch against every photo, a block of ``block`` sketches ×
  ``block`` photos at a time, so what it holds besides the chunk of rows asked for is one block's images and
  the model's bounded token cache, whatever the gallery's size.

Both return ``sbir.ranking.LazyScores``: the metrics engine asks for a chunk of query rows at a time, so nothing
of size queries × gallery is ever held (at QuickDraw-30's 92,291 × 54,151 a dense float32 matrix is 19 GB).
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
from sbir.ranking import LazyScores, similarity
from sbir.manifest import Manifest

log = logging.getLogger("models.pair_ranking")


def _images(model: PairScorer | GridScorer, manifest: Manifest, rows: pd.DataFrame, domain: str) -> torch.Tensor:
    preprocess = model.preprocess(domain)  # type: ignore[union-attr]
    return torch.stack([load_image(manifest.resolve(path), preprocess) for path in rows["path"]])


class RerankedScores(LazyScores):
    """Embedding scores with each query's top-k replaced by its pair scores, lifted above the row's maximum."""

    def __init__(self, sketch_emb: np.ndarray, photo_emb: np.ndarray, top: np.ndarray, pair_scores: np.ndarray):
        self.sketch_emb, self.photo_emb = sketch_emb, photo_emb
        self.top, self.pair_scores = top, pair_scores  # (queries, k) gallery indices and their pair scores
        self.shape = (len(sketch_emb), len(photo_emb))

    def rows(self, index: np.ndarray) -> np.ndarray:
        scores = similarity(self.sketch_emb[index], self.photo_emb)
        pairs = self.pair_scores[index]
        lifted = scores.max(axis=1, keepdims=True) + 1 + pairs - pairs.min(axis=1, keepdims=True)
        np.put_along_axis(scores, self.top[index], lifted.astype(np.float32), axis=1)
        return scores


def rerank(model: PairScorer, manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame,
           sketch_emb: np.ndarray, photo_emb: np.ndarray, k: int) -> RerankedScores:
    """Embedding scores with each query's top-k re-scored by the model's pair scorer and kept above the rest;
    held: the top-k indices and pair scores (queries × k), the scores made per chunk of rows."""
    started = time.perf_counter()
    log.info("re-scoring the top %d of %d queries with the pair scorer", k, len(sketches))
    _, top = top_k(sketch_emb, photo_emb, k)
    pair_scores = np.empty(top.shape, dtype=np.float32)
    for query, row in enumerate(top):
        sketch = _images(model, manifest, sketches.iloc[[query]], "sketch")
        gallery = _images(model, manifest, photos.iloc[row], "photo")
        pair_scores[query] = np.asarray(model.score_pairs(sketch.expand(len(row), -1, -1, -1), gallery))
    log.info("re-scored %d pairs in %.1f s", top.size, time.perf_counter() - started)
    return RerankedScores(np.asarray(sketch_emb, np.float32), np.asarray(photo_emb, np.float32), top, pair_scores)


class RelationScores(LazyScores):
    """The grid scorer's score of every pair, made for the query rows asked for, in blocks of ``block``."""

    def __init__(self, model: GridScorer, manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame,
                 block: int = 256) -> None:
        self.model, self.manifest, self.sketches, self.photos, self.block = model, manifest, sketches, photos, block
        self.shape = (len(sketches), len(photos))

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), len(self.photos)), dtype=np.float32)
        for first_sketch in range(0, len(index), self.block):
            sketch_rows = slice(first_sketch, first_sketch + self.block)
            sketch_images = _images(self.model, self.manifest, self.sketches.iloc[index[sketch_rows]], "sketch")
            for first_photo in range(0, len(self.photos), self.block):
                photo_rows = slice(first_photo, first_photo + self.block)
                photo_images = _images(self.model, self.manifest, self.photos.iloc[photo_rows], "photo")
                out[sketch_rows, photo_rows] = self.model.score_grid(sketch_images, photo_images)
        return out

    def columns(self, keep: np.ndarray) -> RelationScores:
        """Only the kept photos are scored (the fine-grained gallery of paired photos)."""
        photos = self.photos[np.asarray(keep, dtype=bool)].reset_index(drop=True)
        return RelationScores(self.model, self.manifest, self.sketches, photos, self.block)


def score_every_pair(model: GridScorer, manifest: Manifest, sketches: pd.DataFrame, photos: pd.DataFrame,
                     block: int = 256) -> RelationScores:
    """Every sketch–photo pair by the model's grid scorer (ZSE-SBIR's RN mode), made per chunk of query rows."""
    log.info("scoring all %d x %d pairs with the relation network", len(sketches), len(photos))
    return RelationScores(model, manifest, sketches, photos, block)
