"""Sketch ink normalisation: sketches from the wild (thin grey pencil, thick marker, faint scans, tiny bitmaps,
off-centre drawings) brought to one look before the encoder — dark strokes of one width, centred, filling the
frame at their own aspect.

Steps: grey levels stretched between the ink (darkest percentile) and the paper (a bright percentile); the
drawing cropped to its ink's bounding box and padded to a square with a margin (centring, aspect kept); then
the strokes thinned to their skeleton and redrawn at a fixed width, anti-aliased. A blank image stays blank.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage
from skimage.morphology import skeletonize

from sbir.images import flatten_alpha

INK_THRESHOLD = 0.5  # grey level (0 ink .. 1 paper) below which a stretched pixel counts as ink
STROKE_THRESHOLD = 0.7  # for the skeleton, after smoothing: keeps anti-aliased and blocky (upscaled) strokes whole
# A sketch with less ink than this share of its pixels (in strokes, specks not counted) is blank: nothing to
# search with. 1e-3 is a stroke of a tenth of the side at a 1 % width; every style-shift sketch holds over 10x
# more (the least, off_centre_partial at 128 px: 0.015; thin_grey 0.020; tests/code/test_sketch_styles.py).
BLANK_INK_FRACTION = 1e-3
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
MEASURE_SIDE = 256  # ink is measured on a copy at most this large (area-averaged): one drawing scores alike at any
# resolution (thin lines of a large scan stay ink: contrast is stretched after), and a huge upload costs no more


def stretch_contrast(gray: np.ndarray, ink_percentile: float = 0.05, paper_percentile: float = 90.0,
                     min_range: float = 0.08) -> np.ndarray:
    """Grey levels in [0, 1] mapped so the darkest ink is 0 and the paper 1; a flat image becomes white.

    The ink level is read on a slightly blurred copy (single noisy pixels do not set it); a sparse drawing
    (a thin outline on a large page) is a tiny share of the pixels, hence the low percentile."""
    ink = np.percentile(ndimage.gaussian_filter(gray, 0.5), ink_percentile)
    paper = _paper_level(gray, paper_percentile)
    if paper - ink < min_range:
        return np.ones_like(gray)
    return np.clip((gray - ink) / (paper - ink), 0.0, 1.0)


def _paper_level(gray: np.ndarray, percentile: float) -> np.floating:
    """``np.percentile(gray, percentile)``, found by one count where white paper fills every rank around it (most
    sketches: the percentile then interpolates between equal neighbours, 1.0), else by the partition."""
    below = int((gray.size - 1) * percentile / 100) - 1  # a rank before the interpolated one, with a margin
    if below >= 0 and np.count_nonzero(gray == 1.0) >= gray.size - below:
        return np.float32(1.0) if gray.dtype == np.float32 else np.float64(1.0)
    return np.percentile(gray, percentile)


def crop_to_ink(gray: np.ndarray, margin: float = 0.08) -> np.ndarray:
    """The ink's bounding box, padded with paper to a square with ``margin`` (a fraction of its side) around."""
    rows, cols = np.nonzero(gray < INK_THRESHOLD)
    if rows.size == 0:
        return gray
    box = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    side = int(np.ceil(max(box.shape) * (1 + 2 * margin)))
    out = np.ones((side, side), dtype=gray.dtype)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return out


def ink_skeleton(gray: np.ndarray, min_blob: float = 2e-4) -> np.ndarray:
    """One-pixel centre lines of the ink, specks smaller than ``min_blob`` of the image's area removed. A slight
    blur (1/128 of the side) first rounds off the staircase of upscaled bitmaps."""
    ink = ndimage.gaussian_filter(gray, sigma=max(0.5, gray.shape[0] / 128)) < STROKE_THRESHOLD
    return skeletonize(without_specks(ink, max(2.0, min_blob * gray.size)))


def without_specks(ink: np.ndarray, min_size: float) -> np.ndarray:
    """``ink`` without its 8-connected blobs of fewer than ``min_size`` pixels."""
    labels, sizes = _blobs(ink)
    if sizes.size == 1:
        return ink
    keep = sizes >= min_size
    keep[0] = False  # the paper
    return keep[labels]


def _blobs(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected blobs of ``ink`` (thin diagonals hold together): their labels and each label's pixel count
    (label 0, the paper, first). ``np.bincount`` counts them in one pass; ``ndimage.sum`` per label took about
    twice as long (timed by hand: benchmarks/results/preprocessing.conclusion.md)."""
    labels, count = ndimage.label(ink, structure=EIGHT_CONNECTED)
    return labels, np.bincount(labels.ravel(), minlength=count + 1)


def ink_fraction(image: Image.Image, min_blob: float = 2e-4) -> float:
    """The share of the picture's pixels that are ink of strokes, on a copy at most ``MEASURE_SIDE`` large: grey
    levels stretched as ``normalize_ink`` does, specks smaller than ``min_blob`` of the area (noise, dust) not
    counted."""
    ink = stretch_contrast(_gray(image, MEASURE_SIDE)) < INK_THRESHOLD
    sizes = _blobs(ink)[1][1:]
    return float(sizes[sizes >= max(2.0, min_blob * ink.size)].sum() / ink.size)


def is_blank(image: Image.Image, threshold: float = BLANK_INK_FRACTION) -> bool:
    """Whether a sketch holds too little ink to search with (``BLANK_INK_FRACTION``)."""
    return ink_fraction(image) < threshold


def redraw_strokes(skeleton: np.ndarray, size: int, width: float) -> np.ndarray:
    """A skeleton (any resolution) scaled to ``size`` and redrawn ``width`` pixels wide, anti-aliased; paper = 1."""
    if not skeleton.any():
        return np.ones((size, size), dtype=np.float32)
    rows, cols = np.nonzero(skeleton)
    scale = size / skeleton.shape[0]
    canvas = np.zeros((size, size), dtype=bool)
    canvas[np.minimum((rows * scale).astype(int), size - 1), np.minimum((cols * scale).astype(int), size - 1)] = True
    distance = near_distance(canvas, width / 2 + 0.5)
    return np.clip(distance - width / 2 + 0.5, 0.0, 1.0).astype(np.float32)


def near_distance(canvas: np.ndarray, reach: float, max_offsets: int = 25) -> np.ndarray:
    """The Euclidean distance of every pixel to the nearest ``canvas`` pixel where it is below ``reach``, inf
    beyond: what ``redraw_strokes`` needs (farther pixels are paper either way), the same float64 values as
    ``ndimage.distance_transform_edt`` (the square root of an integer squared distance). Thin strokes reach a few
    pixels, so a few shifted comparisons beat a whole distance transform; wide ones fall back to it."""
    near = int(np.ceil(reach))
    offsets = [(dy, dx) for dy in range(-near, near + 1) for dx in range(-near, near + 1) if dy * dy + dx * dx < reach * reach]
    if len(offsets) > max_offsets:
        distance = ndimage.distance_transform_edt(~canvas)
        return np.where(distance < reach, distance, np.inf)
    height, width = canvas.shape
    squared = np.full(canvas.shape, np.inf)
    for dy, dx in sorted(offsets, key=lambda offset: offset[0] ** 2 + offset[1] ** 2):
        hit = np.zeros_like(canvas)  # pixels whose neighbour at (dy, dx) is a canvas pixel
        hit[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
            canvas[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
        squared[hit & np.isinf(squared)] = dy * dy + dx * dx
    return np.sqrt(squared)


def ink_strokes(image: Image.Image, size: int, stroke_width: float | None = None, margin: float = 0.08) -> np.ndarray:
    """A sketch as dark strokes of one width (default ``size / 40`` px), centred in a white ``size`` square; grey
    levels, uint8 (``size``, ``size``)."""
    framed = crop_to_ink(stretch_contrast(_gray(image)), margin)
    strokes = redraw_strokes(ink_skeleton(framed), size, stroke_width if stroke_width is not None else max(1.0, size / 40))
    return (strokes * 255).round().astype(np.uint8)


def normalize_ink(image: Image.Image, size: int, stroke_width: float | None = None, margin: float = 0.08) -> Image.Image:
    """``ink_strokes`` as an RGB picture."""
    return Image.fromarray(ink_strokes(image, size, stroke_width, margin)).convert("RGB")


def _gray(image: Image.Image, max_side: int | None = None) -> np.ndarray:
    """Grey levels in [0, 1] (0 black), transparency flattened onto white; shrunk (area average) to ``max_side``."""
    gray = ImageOps.grayscale(flatten_alpha(image))
    if max_side is not None and max(gray.size) > max_side:
        gray.thumbnail((max_side, max_side), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32) / 255.0
