"""Sketch styles for the style-shift report, and ink normalisation that brings them back to one look."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image, ImageDraw

from sbir.datasets.openmoji import openmoji_svg_dir
from sbir.datasets.strokes import SketchStyle, line_layer_strokes, perturb_strokes
from sbir.datasets.styles import STYLES, render_style
from sbir.ink import normalize_ink


@pytest.fixture(scope="module")
def umbrella():
    svg = (openmoji_svg_dir() / "2602.svg").read_text()
    return perturb_strokes(line_layer_strokes(svg), np.random.default_rng(0), SketchStyle())


def _ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255 < 0.5


def test_styles_change_the_look_not_the_drawing(umbrella) -> None:
    reference = _ink(render_style(umbrella, 96, "in_style", np.random.default_rng(0)))
    looks = {name: np.asarray(render_style(umbrella, 96, name, np.random.default_rng(0)), dtype=np.float32)
             for name in STYLES}
    assert looks["thick_marker"].__lt__(128).sum() > 2 * reference.sum()  # far more ink
    assert looks["thin_grey"].min() >= 140  # grey pencil, never black
    assert looks["faint_scan"].min() > 150 and looks["faint_scan"].std() > 3  # low contrast, noisy
    assert len(np.unique(looks["tiny_bitmap"], axis=0)) <= 20  # rows repeat: a 20 px bitmap blown up
    off = looks["off_centre_partial"] < 128
    rows, cols = np.nonzero(off)
    assert off.sum() < 0.6 * reference.sum() and (rows.mean() < 35 or rows.mean() > 61 or cols.mean() < 35
                                                   or cols.mean() > 61)  # smaller, in a corner
    with pytest.raises(ValueError, match="unknown sketch style 'crayon'"):
        render_style(umbrella, 96, "crayon", np.random.default_rng(0))


def test_ink_normalisation_brings_every_style_close_to_the_original(umbrella) -> None:
    """After normalisation each style overlaps the normalised original far more than a different drawing does."""
    def normalised(name: str, strokes=umbrella) -> np.ndarray:
        return _ink(normalize_ink(render_style(strokes, 128, name, np.random.default_rng(1)), 64))

    def overlap(a: np.ndarray, b: np.ndarray) -> float:  # ink within 2 px of the other's ink, both ways
        from scipy import ndimage
        near_a, near_b = ndimage.binary_dilation(a, iterations=2), ndimage.binary_dilation(b, iterations=2)
        return float(min((a & near_b).sum() / a.sum(), (b & near_a).sum() / b.sum()))

    original = normalised("in_style")
    other = perturb_strokes(line_layer_strokes((openmoji_svg_dir() / "1F418.svg").read_text()),
                            np.random.default_rng(0), SketchStyle())
    unrelated = overlap(original, normalised("in_style", other))
    for name in ("thin_grey", "thick_marker", "faint_scan", "off_centre_partial"):
        assert overlap(original, normalised(name)) > max(0.8, unrelated + 0.3), name
    assert overlap(original, normalised("tiny_bitmap")) > unrelated + 0.1


def test_ink_normalisation_centres_and_handles_blank_images() -> None:
    image = Image.new("L", (200, 100), 240)
    ImageDraw.Draw(image).ellipse((150, 60, 190, 95), outline=200, width=1)  # small, faint, off-centre
    ink = _ink(normalize_ink(image, 64))
    rows, cols = np.nonzero(ink)
    assert abs(rows.mean() - 31.5) < 3 and abs(cols.mean() - 31.5) < 3  # centred
    assert cols.max() - cols.min() > 40  # scaled up to fill the frame
    blank = normalize_ink(Image.new("RGBA", (50, 80), (0, 0, 0, 0)), 32)
    assert blank.size == (32, 32) and np.asarray(blank).min() == 255
