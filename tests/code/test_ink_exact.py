"""The faster ink normalisation (``sbir.ink``: the paper's level by one count on white paper, blob sizes by
``np.bincount``, distances only as far as a stroke reaches, no RGB round trip) gives exactly what the first implementation gave (``ink_reference``): every pixel of
every sketch of the tiny dataset, of every style-shift style and of hand-made edge cases, at the encoders' sizes."""

from __future__ import annotations

from pathlib import Path

import ink_reference
import numpy as np
import pytest
from helpers import params_section
from PIL import Image, ImageDraw
from scipy import ndimage

from models.interface import Preprocess
from sbir.datasets.styles import STYLES
from sbir.ink import ink_fraction, near_distance, normalize_ink


def edge_cases() -> list[Image.Image]:
    blank, speck, dot, diagonal, border, wide = (Image.new("L", (96, 96), 255) for _ in range(6))
    speck.putpixel((40, 40), 0)
    ImageDraw.Draw(dot).ellipse((40, 40, 46, 46), fill=0)
    ImageDraw.Draw(diagonal).line((0, 0, 95, 95), fill=0, width=1)
    ImageDraw.Draw(border).rectangle((0, 0, 95, 95), outline=0, width=2)
    ImageDraw.Draw(wide).line((10, 50, 90, 50), fill=40, width=30)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120), dtype=np.uint8))
    return [blank, speck, dot, diagonal, border, wide, noise, Image.new("RGBA", (50, 30), (0, 0, 0, 0))]


def sketches(tiny_openmoji: Path, tmp_path: Path) -> list[Image.Image]:
    from sbir.datasets import create
    from sbir.manifest import read_manifest

    manifest = read_manifest(tiny_openmoji)
    originals = [Image.open(manifest.resolve(path)) for path in manifest.select(domain="sketch")["path"]]
    dataset = create("openmoji_zs", **params_section("prepare.openmoji_zs", image_size=128, workers=1))
    styled = dataset.restyle(manifest, tmp_path, tuple(STYLES), progress=False)
    return originals + [Image.open(tmp_path / path) for path in styled["path"]] + edge_cases()


def test_ink_normalisation_is_pixel_identical_to_the_reference(tiny_openmoji: Path, tmp_path: Path) -> None:
    images = sketches(tiny_openmoji, tmp_path)
    assert len(images) > 300
    for number, image in enumerate(images):
        for size in (64, 224) if number % 8 == 0 else (64,):
            expected = ink_reference.load(image, size)
            assert np.array_equal(Preprocess(image_size=size, ink=True).load(image).numpy(), expected.numpy()), number
        assert np.array_equal(np.asarray(normalize_ink(image, 32, stroke_width=7.0)),  # wide: the EDT fallback
                              np.asarray(ink_reference.normalize_ink(image, 32, stroke_width=7.0))), number
        assert ink_fraction(image) == ink_reference.ink_fraction(image), number


@pytest.mark.parametrize("reach", [0.5, 1.0, 1.3, 2.0, 2.5, 3.3])
def test_near_distance_is_the_distance_transform_within_reach(reach: float) -> None:
    canvas = np.random.default_rng(int(reach * 10)).random((40, 50)) < 0.02
    canvas[0, 0] = canvas[-1, -1] = True
    exact = ndimage.distance_transform_edt(~canvas)
    near = near_distance(canvas, reach)
    assert np.array_equal(near[exact < reach], exact[exact < reach]) and np.isinf(near[exact >= reach]).all()


def test_the_paper_level_is_the_percentile() -> None:
    from sbir.ink import _paper_level

    rng = np.random.default_rng(3)
    for white in (0.0, 0.05, 0.0999, 0.1, 0.1001, 0.11, 0.5, 1.0):
        for n in (1, 2, 9, 10, 11, 97, 1000):
            gray = rng.integers(0, 255, n).astype(np.float32) / np.float32(255)
            gray[rng.random(n) < white] = 1.0
            for dtype in (np.float32, np.float64):
                level, expected = _paper_level(gray.astype(dtype), 90.0), np.percentile(gray.astype(dtype), 90.0)
                assert level == expected and type(level) is type(expected), (white, n, dtype)
