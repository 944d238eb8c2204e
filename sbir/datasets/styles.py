"""Sketch styles beyond OpenMoji's line art, for the style-shift report: the same drawing (the same seeded
hand-drawn perturbation of an emoji's line layer) rendered as sketches look in the wild.

- ``in_style``: as the dataset draws them (black pen, its widths);
- ``thin_grey``: a thin grey pencil line (0.35× width, grey 150), anti-aliased;
- ``thick_marker``: a thick black marker (3× width);
- ``faint_scan``: a faint scan: low contrast (ink 185 on paper 238), sensor noise and a slight blur;
- ``tiny_bitmap``: drawn as a 20 px bitmap, then upscaled to the image size (blocky);
- ``off_centre_partial``: drawn at 60 % size in a corner of the canvas with a fifth of one side cut away;
- ``rough``: a hand-drawn two-pass wobble, simplified, with uneven pressure (``stroke_styles.rough_style``: other
  settings than the stroke augmentation training may use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageFilter

from sbir.datasets.stroke_styles import rough_style
from sbir.datasets.strokes import Stroke, rasterize

StyleRenderer = Callable[[list[Stroke], int, np.random.Generator], Image.Image]


def _widths(strokes: list[Stroke], factor: float) -> list[Stroke]:
    return [replace(stroke, width=stroke.width * factor) for stroke in strokes]


def _grey(image: Image.Image, ink: int, paper: int = 255) -> Image.Image:
    """Black ink becomes ``ink``, white paper ``paper`` (anti-aliased levels in between)."""
    return image.point(lambda value: int(round(ink + (paper - ink) * value / 255)))


def _thin_grey(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    return _grey(rasterize(_widths(strokes, 0.35), size, supersample=4), ink=150)


def _thick_marker(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    return rasterize(_widths(strokes, 3.0), size)


def _faint_scan(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    faint = np.asarray(_grey(rasterize(strokes, size), ink=185, paper=238), dtype=np.float32)
    noisy = np.clip(faint + rng.normal(0, 6, faint.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(0.6))


def _tiny_bitmap(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    return rasterize(strokes, 20).resize((size, size), Image.Resampling.NEAREST)


def _off_centre_partial(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    small = int(size * 0.6)
    drawing = rasterize(strokes, small)
    cut = small // 5
    box = [(cut, 0, small, small), (0, 0, small - cut, small), (0, cut, small, small), (0, 0, small, small - cut)]
    drawing = drawing.crop(box[int(rng.integers(4))])
    canvas = Image.new("L", (size, size), 255)
    corner = int(rng.integers(4))
    x = 0 if corner in (0, 2) else size - drawing.width
    y = 0 if corner in (0, 1) else size - drawing.height
    canvas.paste(drawing, (x, y))
    return canvas


STYLES: dict[str, StyleRenderer] = {
    "in_style": lambda strokes, size, rng: rasterize(strokes, size),
    "thin_grey": _thin_grey,
    "thick_marker": _thick_marker,
    "faint_scan": _faint_scan,
    "tiny_bitmap": _tiny_bitmap,
    "off_centre_partial": _off_centre_partial,
    "rough": rough_style,
}


def render_style(strokes: list[Stroke], size: int, style: str, rng: np.random.Generator) -> Image.Image:
    """The (already perturbed) strokes drawn in ``style``; mode L."""
    if style not in STYLES:
        raise ValueError(f"unknown sketch style '{style}'; known: {sorted(STYLES)}")
    return STYLES[style](strokes, size, rng)
