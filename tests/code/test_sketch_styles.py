"""Sketch styles for the style-shift report, and ink normalisation that brings them back to one look."""

from __future__ import annotations


from pathlib import Path

import numpy as np
import pytest
from helpers import params_section
from PIL import Image, ImageDraw

from sbir.datasets.openmoji import openmoji_svg_dir
from sbir.datasets.strokes import SketchStyle, line_layer_strokes, perturb_strokes
from sbir.datasets.styles import STYLES, render_style
from sbir.ink import BLANK_INK_FRACTION, ink_fraction, is_blank, normalize_ink


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


def _blank_or_nearly(kind: str) -> Image.Image:
    rng = np.random.default_rng(0)
    if kind == "white":
        return Image.new("RGB", (300, 200), "white")
    if kind == "one-colour":
        return Image.new("RGB", (64, 64), (30, 90, 200))
    if kind == "transparent":
        return Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    if kind == "a-dot":  # a tap on the pad: 9 pixels of 256²
        image = Image.new("L", (256, 256), 255)
        image.paste(0, (100, 100, 103, 103))
        return image
    if kind == "scanner-noise":  # a blank page scanned: paper with sensor noise and dust specks
        page = np.clip(rng.normal(235, 6, (256, 256)), 0, 255)
        page[rng.integers(0, 256, 40), rng.integers(0, 256, 40)] = 60
        return Image.fromarray(page.astype(np.uint8))
    if kind == "a-short-tick":  # a stroke of 6 % of the side, 2 px wide
        image = Image.new("L", (256, 256), 255)
        ImageDraw.Draw(image).line((120, 120, 135, 120), fill=0, width=2)
        return image
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["white", "one-colour", "transparent", "a-dot", "scanner-noise", "a-short-tick"])
def test_blank_and_near_blank_sketches_are_blank(kind: str) -> None:
    assert is_blank(_blank_or_nearly(kind)), ink_fraction(_blank_or_nearly(kind))


def test_one_drawing_has_about_one_ink_fraction_at_any_resolution() -> None:
    """A 2 px circle drawn on a 2000² scan is the same sketch as at 384 px, not a blank page."""
    fractions = []
    for side in (384, 2000):
        image = Image.new("L", (side, side), 255)
        radius = side / 10
        ImageDraw.Draw(image).ellipse((side / 2 - radius, side / 2 - radius, side / 2 + radius, side / 2 + radius),
                                      outline=0, width=2)
        fractions.append(ink_fraction(image))
        assert not is_blank(image), (side, fractions[-1])
    assert 0.5 < fractions[0] / fractions[1] < 2, fractions


def test_ink_fraction_counts_strokes_not_specks() -> None:
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).line((10, 50, 89, 50), fill=0, width=2)  # 80 × 2 pixels of ink
    assert ink_fraction(image) == pytest.approx(160 / 10_000, abs=2e-3)
    image.putpixel((5, 5), 0)  # a speck adds nothing
    assert ink_fraction(image) == pytest.approx(160 / 10_000, abs=2e-3)
    assert not is_blank(image)


@pytest.mark.parametrize("image_size", [64, params_section("prepare.openmoji_zs")["image_size"]])
def test_no_style_shift_sketch_is_blank(tiny_openmoji: Path, tmp_path: Path, image_size: int) -> None:
    """Every style of the style-shift report (faint, tiny, thin, partial…), redrawn from the unseen sketches, holds
    several times the blank threshold's ink, at the tests' size and at the default one."""
    from sbir.datasets import create
    from sbir.manifest import read_manifest

    dataset = create("openmoji_zs", **params_section("prepare.openmoji_zs", image_size=image_size, workers=1))
    rows = dataset.restyle(read_manifest(tiny_openmoji), tmp_path, tuple(STYLES), progress=False)
    least = {style: min(ink_fraction(Image.open(tmp_path / path)) for path in group["path"])
             for style, group in rows.groupby("style")}
    assert set(least) == set(STYLES) and len(rows) >= 6 * 20
    assert min(least.values()) > 5 * BLANK_INK_FRACTION, least
