import numpy as np
import pytest

from sbir.datasets.strokes import SketchStyle, SvgError, line_layer_strokes, perturb_strokes, rasterize, render_photo

SVG = """<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
  <g id="color"><circle cx="36" cy="36" r="20" fill="#FF0000"/></g>
  <g id="line">
    <circle cx="36" cy="36" r="20" fill="none" stroke="#000000" stroke-width="2"/>
    <path fill="none" stroke="#000" stroke-width="2" d="M20,50 C30,60 40,60 52,50"/>
    <line x1="10" y1="10" x2="20" y2="20" stroke="#000" stroke-width="2"/>
    <g transform="translate(5,0)"><path d="M26,30 a3,3 0 1,0 6,0 a3,3 0 1,0 -6,0"/></g>
  </g>
</svg>"""


def test_line_layer_becomes_strokes_with_transforms_and_fills() -> None:
    strokes = line_layer_strokes(SVG)
    assert len(strokes) == 4
    circle, curve, line, eye = strokes
    assert not circle.filled and circle.width == 2.0
    radii = np.linalg.norm(circle.points - 36, axis=1)
    assert np.allclose(radii, 20, atol=0.05) and len(circle.points) > 50  # densely sampled curve
    assert np.allclose(line.points[[0, -1]], [[10, 10], [20, 20]])
    assert eye.filled and eye.points[:, 0].min() == pytest.approx(31, abs=0.05)  # translate(5,0) applied


@pytest.mark.parametrize("svg, message", [
    ("<svg", "not valid SVG"),
    ('<svg xmlns="http://www.w3.org/2000/svg"><g id="color"/></svg>', "no non-empty"),
    ('<svg xmlns="http://www.w3.org/2000/svg"><g id="line"><circle r="0" fill="none"/></g></svg>', "no drawable"),
])
def test_unusable_svgs_are_named(svg: str, message: str) -> None:
    with pytest.raises(SvgError, match=message):
        line_layer_strokes(svg, source="x.svg")


def _ink(image) -> np.ndarray:
    return np.asarray(image) < 128


def test_sketches_are_seeded_varied_and_close_to_the_line_art() -> None:
    strokes = line_layer_strokes(SVG)
    style = SketchStyle()
    first = rasterize(perturb_strokes(strokes, np.random.default_rng(1), style), 96)
    again = rasterize(perturb_strokes(strokes, np.random.default_rng(1), style), 96)
    other = rasterize(perturb_strokes(strokes, np.random.default_rng(2), style), 96)
    clean = rasterize(strokes, 96)
    assert first.mode == "L" and first.size == (96, 96)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    # a perturbed sketch differs from the clean drawing but keeps its overall extent
    assert (_ink(first) != _ink(clean)).sum() > 50
    ys, xs = np.nonzero(_ink(first))
    assert 10 < xs.min() < 40 and 60 < xs.max() < 90


def test_drops_are_bounded() -> None:
    strokes = line_layer_strokes(SVG) * 10
    style = SketchStyle(drop_probability=0.9, partial_probability=0.0, max_dropped_ink=1.0)
    kept = perturb_strokes(strokes, np.random.default_rng(0), style)
    assert len(strokes) - int(style.max_dropped_fraction * len(strokes)) == len(kept) < len(strokes)


def test_partial_strokes_are_shorter_than_their_originals() -> None:
    strokes = line_layer_strokes(SVG)
    kept = perturb_strokes(strokes, np.random.default_rng(0), SketchStyle(drop_probability=0.0,
                                                                          partial_probability=1.0))
    assert len(kept) == len(strokes)
    for original, drawn in zip(strokes, kept):
        if original.filled:
            assert len(drawn.points) == len(original.points)  # outlines of fills are never cut
        else:
            assert len(drawn.points) < len(original.points)


def test_the_main_outline_is_never_dropped() -> None:
    strokes = line_layer_strokes(SVG)  # the circle holds most of the ink
    style = SketchStyle(drop_probability=1.0, max_dropped_fraction=1.0, partial_probability=0.0)
    for seed in range(5):
        kept = perturb_strokes(strokes, np.random.default_rng(seed), style)
        assert any(len(s.points) == len(strokes[0].points) for s in kept)


def test_photo_is_the_colour_rendering() -> None:
    photo = render_photo(SVG, 64)
    assert photo.mode == "RGB" and photo.size == (64, 64)
    centre = np.asarray(photo)[32, 32]
    assert centre[0] > 200 and centre[1] < 60  # the red fill
    assert tuple(np.asarray(photo)[1, 1]) == (255, 255, 255)  # white background
