"""The ink normalisation as it was written first (scipy's per-label sums, ``np.isin``, a whole Euclidean distance
transform, a PIL RGB round trip): the reference the faster ``sbir.ink`` must match pixel for pixel
(tests/code/test_ink_exact.py) and the baseline of benchmarks/bench_preprocessing.py."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from sbir.ink import INK_THRESHOLD, MEASURE_SIDE, STROKE_THRESHOLD, _gray, crop_to_ink


def stretch_contrast(gray: np.ndarray, ink_percentile: float = 0.05, paper_percentile: float = 90.0,
                     min_range: float = 0.08) -> np.ndarray:
    ink = np.percentile(ndimage.gaussian_filter(gray, 0.5), ink_percentile)
    paper = np.percentile(gray, paper_percentile)
    if paper - ink < min_range:
        return np.ones_like(gray)
    return np.clip((gray - ink) / (paper - ink), 0.0, 1.0)


def ink_skeleton(gray: np.ndarray, min_blob: float = 2e-4) -> np.ndarray:
    ink = ndimage.gaussian_filter(gray, sigma=max(0.5, gray.shape[0] / 128)) < STROKE_THRESHOLD
    labels, count = ndimage.label(ink, structure=np.ones((3, 3)))
    if count:
        sizes = ndimage.sum(ink, labels, index=np.arange(1, count + 1))
        ink = np.isin(labels, 1 + np.flatnonzero(sizes >= max(2.0, min_blob * gray.size)))
    return skeletonize(ink)


def redraw_strokes(skeleton: np.ndarray, size: int, width: float) -> np.ndarray:
    if not skeleton.any():
        return np.ones((size, size), dtype=np.float32)
    rows, cols = np.nonzero(skeleton)
    scale = size / skeleton.shape[0]
    canvas = np.zeros((size, size), dtype=bool)
    canvas[np.minimum((rows * scale).astype(int), size - 1), np.minimum((cols * scale).astype(int), size - 1)] = True
    distance = ndimage.distance_transform_edt(~canvas)
    return np.clip(distance - width / 2 + 0.5, 0.0, 1.0).astype(np.float32)


def normalize_ink(image: Image.Image, size: int, stroke_width: float | None = None, margin: float = 0.08) -> Image.Image:
    framed = crop_to_ink(stretch_contrast(_gray(image)), margin)
    strokes = redraw_strokes(ink_skeleton(framed), size, stroke_width if stroke_width is not None else max(1.0, size / 40))
    return Image.fromarray((strokes * 255).round().astype(np.uint8)).convert("RGB")


def load(image: Image.Image, size: int) -> torch.Tensor:
    """``Preprocess(image_size=size, ink=True).load`` as it was."""
    return torch.from_numpy(np.asarray(normalize_ink(image, size), dtype=np.uint8).transpose(2, 0, 1).copy())


def ink_fraction(image: Image.Image, min_blob: float = 2e-4) -> float:
    ink = stretch_contrast(_gray(image, MEASURE_SIDE)) < INK_THRESHOLD
    labels, count = ndimage.label(ink, structure=np.ones((3, 3)))
    if not count:
        return 0.0
    sizes = ndimage.sum(ink, labels, index=np.arange(1, count + 1))
    return float(sizes[sizes >= max(2.0, min_blob * ink.size)].sum() / ink.size)
