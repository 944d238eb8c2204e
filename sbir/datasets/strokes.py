"""Hand-drawn sketches from vector line art, and colour renderings of the same SVG.

OpenMoji SVGs keep the outline drawing in a ``<g id="line">`` layer. We turn that layer into strokes
(polylines in viewBox units), then draw each sketch with seeded hand-drawn perturbations: a smooth global
warp and per-stroke wobble (stroke jitter), varying pen width, dropped and partially drawn strokes, and a
small random affine. The "photo" is the full colour rendering (resvg).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import resvg_py
from PIL import Image, ImageDraw
from svgelements import SVG, Close, Move, Path, Shape

SVG_NS = "http://www.w3.org/2000/svg"
VIEWBOX = 72.0  # OpenMoji's canvas: viewBox="0 0 72 72"
_SAMPLES_PER_UNIT = 1.5  # polyline density along a segment, in points per viewBox unit


class SvgError(ValueError):
    """An SVG that has no usable line layer."""


@dataclass(frozen=True)
class Stroke:
    """One pen stroke: a polyline in viewBox units, drawn with a width, or a filled outline."""

    points: np.ndarray  # (k, 2) float64
    width: float
    filled: bool


@dataclass(frozen=True)
class SketchStyle:
    """How strongly a sketch departs from the clean line art. Units are viewBox units unless noted."""

    warp_amplitude: float = 1.2  # smooth global displacement field
    wobble_amplitude: float = 0.5  # per-stroke low-frequency wobble
    width_scale: tuple[float, float] = (0.6, 1.5)  # whole-sketch pen width factor
    width_jitter: float = 0.2  # per-stroke relative width change
    drop_probability: float = 0.12  # a stroke is left out
    partial_probability: float = 0.2  # a stroke is drawn only in part
    partial_keep: tuple[float, float] = (0.55, 0.95)  # fraction of a partial stroke that is drawn
    max_dropped_fraction: float = 0.3
    max_dropped_ink: float = 0.15  # a stroke holding more of the drawing's ink length is never dropped
    rotation_degrees: float = 10.0
    scale: tuple[float, float] = (0.85, 1.05)
    shift: float = 3.0
    shear: float = 0.08


def line_layer_strokes(svg_text: str, source: str = "<svg>") -> list[Stroke]:
    """Parse the ``line`` layer of an OpenMoji SVG into strokes (transforms applied)."""
    try:
        root = ET.fromstring(svg_text)
    except ET.ParseError as error:
        raise SvgError(f"{source}: not valid SVG/XML ({error})") from error
    layer = next((g for g in root.iter(f"{{{SVG_NS}}}g") if g.get("id") == "line"), None)
    if layer is None or len(layer) == 0:
        raise SvgError(f"{source}: no non-empty <g id=\"line\"> layer")
    wrapper = ET.Element(f"{{{SVG_NS}}}svg", {"viewBox": f"0 0 {VIEWBOX:g} {VIEWBOX:g}",
                                               "width": f"{VIEWBOX:g}", "height": f"{VIEWBOX:g}"})
    wrapper.append(layer)
    document = SVG.parse(io.StringIO(ET.tostring(wrapper, encoding="unicode")))
    strokes: list[Stroke] = []
    for element in document.elements():
        if not isinstance(element, Shape):
            continue
        filled = element.fill is not None and element.fill.value is not None and element.fill.alpha > 0
        stroked = element.stroke is not None and element.stroke.value is not None and element.stroke.alpha > 0
        if not (filled or stroked):
            continue
        width = float(element.stroke_width or 1.0) if stroked else 0.0
        for polyline in _sample_subpaths(Path(element)):
            strokes.append(Stroke(points=polyline, width=width, filled=filled and not stroked))
    if not strokes:
        raise SvgError(f"{source}: the line layer has no drawable shapes")
    return strokes


def _sample_subpaths(path: Path) -> list[np.ndarray]:
    """Polylines (one per subpath) sampled densely enough that curves look smooth."""
    polylines = []
    for subpath in path.as_subpaths():
        points: list[np.ndarray] = []
        for segment in subpath:
            if isinstance(segment, Move) or segment.start is None or segment.end is None:
                continue
            if isinstance(segment, Close) and segment.start == segment.end:
                continue
            span = abs(complex(segment.end) - complex(segment.start))
            controls = [getattr(segment, name, None) for name in ("control", "control1", "control2")]
            hull = span + sum(abs(complex(c) - complex(segment.start)) for c in controls if c is not None)
            if segment.__class__.__name__ == "Arc":
                hull = max(hull, float(segment.rx + segment.ry) * np.pi)
            count = max(2, int(np.ceil(hull * _SAMPLES_PER_UNIT)))
            sampled = np.asarray(segment.npoint(np.linspace(0.0, 1.0, count)), dtype=np.float64)
            points.append(sampled if not points else sampled[1:])
        if points:
            polyline = np.concatenate(points)
            if len(polyline) >= 2:
                polylines.append(polyline)
    return polylines


def _smooth_noise(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
    """(count, 2) low-frequency noise: a few random sinusoids along the stroke's arc."""
    t = np.linspace(0.0, 1.0, count)[:, None]
    freqs = rng.uniform(0.5, 2.5, size=(1, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(2, 3))
    weights = rng.normal(0, amplitude / 2, size=(2, 3))
    return np.stack([(weights[d] * np.sin(2 * np.pi * freqs * t + phases[d])).sum(axis=1) for d in range(2)], axis=1)


def _warp_field(rng: np.random.Generator, amplitude: float):
    """A smooth displacement field over the canvas, shared by all strokes of one sketch."""
    freqs = rng.uniform(0.5, 1.8, size=(2, 3, 2)) * 2 * np.pi / VIEWBOX
    phases = rng.uniform(0, 2 * np.pi, size=(2, 3))
    weights = rng.normal(0, amplitude / 2, size=(2, 3))

    def displace(points: np.ndarray) -> np.ndarray:
        offsets = [(weights[d] * np.sin(points @ freqs[d].T + phases[d])).sum(axis=1) for d in range(2)]
        return points + np.stack(offsets, axis=1)

    return displace


def _random_affine(rng: np.random.Generator, style: SketchStyle) -> np.ndarray:
    """2×3 affine about the canvas centre: rotation, anisotropic scale, shear, shift."""
    angle = np.deg2rad(rng.uniform(-style.rotation_degrees, style.rotation_degrees))
    sx, sy = rng.uniform(*style.scale, size=2)
    shear = rng.uniform(-style.shear, style.shear)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rotation @ np.array([[sx, shear], [0.0, sy]])
    centre = np.array([VIEWBOX / 2, VIEWBOX / 2])
    shift = rng.uniform(-style.shift, style.shift, size=2)
    return np.hstack([linear, (centre - linear @ centre + shift)[:, None]])


def perturb_strokes(strokes: list[Stroke], rng: np.random.Generator, style: SketchStyle) -> list[Stroke]:
    """One hand-drawn variant of the strokes (same rng state → same sketch)."""
    count = len(strokes)
    lengths = np.array([np.linalg.norm(np.diff(s.points, axis=0), axis=1).sum() for s in strokes])
    droppable = lengths <= style.max_dropped_ink * max(lengths.sum(), 1e-9)
    dropped = (rng.random(count) < style.drop_probability) & droppable
    max_dropped = int(np.floor(style.max_dropped_fraction * count))
    if dropped.sum() > max_dropped:  # keep the drawing recognisable: undo the excess drops at random
        undo = rng.choice(np.flatnonzero(dropped), size=int(dropped.sum()) - max_dropped, replace=False)
        dropped[undo] = False
    partial = rng.random(count) < style.partial_probability
    keep_fraction = rng.uniform(*style.partial_keep, size=count)
    from_start = rng.random(count) < 0.5
    width_scale = rng.uniform(*style.width_scale)
    width_jitter = rng.uniform(1 - style.width_jitter, 1 + style.width_jitter, size=count)
    warp = _warp_field(rng, style.warp_amplitude)
    affine = _random_affine(rng, style)

    result = []
    for index, stroke in enumerate(strokes):
        wobble = _smooth_noise(rng, len(stroke.points), style.wobble_amplitude)  # drawn for every stroke: stable rng use
        if dropped[index]:
            continue
        points = stroke.points
        if partial[index] and not stroke.filled:
            keep = max(2, int(round(len(points) * keep_fraction[index])))
            points = points[:keep] if from_start[index] else points[-keep:]
            wobble = wobble[:keep] if from_start[index] else wobble[-keep:]
        points = warp(points + wobble)
        points = points @ affine[:, :2].T + affine[:, 2]
        result.append(Stroke(points=points, width=stroke.width * width_scale * width_jitter[index],
                             filled=stroke.filled))
    return result


def rasterize(strokes: list[Stroke], size: int, supersample: int = 2) -> Image.Image:
    """Black strokes on white, antialiased by drawing at ``supersample``× and downsampling; mode L."""
    canvas = size * supersample
    scale = canvas / VIEWBOX
    image = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(point) for point in (stroke.points * scale)]
        if stroke.filled:
            if len(xy) >= 3:
                draw.polygon(xy, fill=0)
            continue
        width = max(1, int(round(stroke.width * scale)))
        draw.line(xy, fill=0, width=width, joint="curve")
        radius = width / 2
        for x, y in (xy[0], xy[-1]):  # round caps, as the SVGs' stroke-linecap="round"
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image


def render_photo(svg_text: str, size: int, source: str = "<svg>") -> Image.Image:
    """The full colour rendering on a white background; mode RGB."""
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg_text, width=size, height=size, background="#ffffff")
    except ValueError as error:
        raise SvgError(f"{source}: resvg could not render it ({error})") from error
    with Image.open(io.BytesIO(bytes(png))) as rendered:
        return rendered.convert("RGB")
