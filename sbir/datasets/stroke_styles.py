"""Stroke-level changes that make a drawing look drawn by a person, on the strokes of ``sbir.datasets.strokes``:

- ``rough``: a hand-drawn wobble — each stroke traced twice with independent jitter and bowing, ends that
  overshoot or stop short (the multi-pass look of rough.js's sketchy rendering);
- ``simplify``: fewer strokes and fewer points — short strokes left out, the rest reduced by Douglas–Peucker
  (``skimage.measure.approximate_polygon``) at a tolerance in viewBox units;
- ``pressure``: uneven pressure — a stroke cut into pieces whose pen width and ink (grey level) vary;
- ``partial``: drawn in part and off-centre — a share of strokes shortened, then the drawing scaled down and
  shifted toward a side.

``augment_strokes`` draws a random mix of them (each with its probability and ranges in ``StrokeAugment``);
``rough_style`` is the fixed "rough" sketch style of the cross-style report (other settings than training uses).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from sbir.datasets.strokes import VIEWBOX, Stroke

Range = tuple[float, float]


@dataclass(frozen=True)
class StrokeAugment:
    """How often each change is applied to a training sketch, and how strongly (ranges drawn per sketch)."""

    rough: float = 0.6
    roughness: Range = (0.4, 1.2)  # jitter amplitude, viewBox units
    simplify: float = 0.5
    tolerance: Range = (0.6, 2.0)  # Douglas–Peucker tolerance, viewBox units
    min_stroke_length: Range = (2.0, 8.0)  # shorter strokes are left out when simplifying
    pressure: float = 0.5
    pressure_range: Range = (0.4, 1.6)  # width factor along a stroke
    partial: float = 0.3
    shorten_share: Range = (0.2, 0.5)  # share of strokes cut to 40–80 % of their length
    scale: Range = (0.55, 0.9)  # the drawing's size when off-centre


def _length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0


def _resample(points: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """Points every ``spacing`` units along the polyline (so jitter has the same frequency everywhere)."""
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] <= 0:
        return points
    at = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / spacing)) + 1))
    return np.stack([np.interp(at, arc, points[:, d]) for d in range(2)], axis=1)


def rough(strokes: list[Stroke], rng: np.random.Generator, roughness: float, passes: int = 2) -> list[Stroke]:
    """Each open stroke traced ``passes`` times: low-frequency jitter, a bow across its chord, ends that
    overshoot or stop short by up to ``roughness``; filled shapes become their rough outline."""
    out = []
    for stroke in strokes:
        points = _resample(np.vstack([stroke.points, stroke.points[:1]]) if stroke.filled else stroke.points)
        if len(points) < 2:
            continue
        t = np.linspace(0.0, 1.0, len(points))[:, None]
        chord = points[-1] - points[0]
        normal = np.array([-chord[1], chord[0]]) / (np.linalg.norm(chord) + 1e-9)
        for _ in range(passes):
            phase, freq = rng.uniform(0, 2 * np.pi, size=2), rng.uniform(0.5, 2.0)
            jitter = roughness * 0.5 * np.sin(2 * np.pi * freq * t + phase)
            bow = rng.normal(0, roughness) * np.sin(np.pi * t) * normal
            traced = points + jitter + bow + rng.normal(0, roughness * 0.15, size=points.shape)
            ends = rng.uniform(-roughness, roughness, size=2)  # overshoot (> 0) or stop short (< 0) at each end
            head = traced[:1] + (traced[:1] - traced[1:2]) * ends[0] if ends[0] > 0 else traced[:1]
            tail = traced[-1:] + (traced[-1:] - traced[-2:-1]) * ends[1] if ends[1] > 0 else traced[-1:]
            traced = np.vstack([head, traced[1:-1], tail])
            width = (stroke.width or 1.0) * rng.uniform(0.6, 1.0)
            out.append(Stroke(points=traced, width=width, filled=False))
    return out


def simplify(strokes: list[Stroke], tolerance: float, min_length: float) -> list[Stroke]:
    """Short strokes left out (never all of them), the rest with fewer points."""
    from skimage.measure import approximate_polygon  # pulls in scipy.signal: imported only where needed

    kept = [s for s in strokes if s.filled or _length(s.points) >= min_length] or strokes
    return [replace(s, points=approximate_polygon(s.points, tolerance)) if len(s.points) > 2 else s for s in kept]


def shorten(strokes: list[Stroke], rng: np.random.Generator, share: float) -> list[Stroke]:
    """A ``share`` of open strokes cut to 40–80 % of their points, from either end."""
    out = []
    for stroke in strokes:
        if not stroke.filled and len(stroke.points) > 3 and rng.random() < share:
            keep = max(2, int(len(stroke.points) * rng.uniform(0.4, 0.8)))
            stroke = replace(stroke, points=stroke.points[:keep] if rng.random() < 0.5 else stroke.points[-keep:])
        out.append(stroke)
    return out


def off_centre(strokes: list[Stroke], rng: np.random.Generator, scale: float) -> list[Stroke]:
    """The drawing scaled about the centre, then shifted as far toward a random side as stays on the canvas."""
    centre = VIEWBOX / 2
    room = (1 - scale) * centre
    shift = rng.uniform(-room, room, size=2)
    return [replace(s, points=(s.points - centre) * scale + centre + shift, width=s.width * scale) for s in strokes]


def draw_with_pressure(strokes: list[Stroke], size: int, rng: np.random.Generator | None,
                       pressure: Range = (1.0, 1.0), supersample: int = 2) -> Image.Image:
    """Black-ink strokes on white (mode L); with ``rng``, each stroke drawn in pieces of varying width and ink."""
    canvas = size * supersample
    scale = canvas / VIEWBOX
    image = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = stroke.points * scale
        if stroke.filled:
            if len(xy) >= 3:
                draw.polygon([tuple(p) for p in xy], fill=0)
            continue
        pieces = np.array_split(np.arange(len(xy)), max(1, len(xy) // 6)) if rng is not None else [np.arange(len(xy))]
        for piece in pieces:
            segment = xy[max(0, piece[0] - 1):piece[-1] + 1]
            if len(segment) < 2:
                continue
            factor = rng.uniform(*pressure) if rng is not None else 1.0
            ink = int(np.clip(255 * (1 - min(1.0, factor)) * 0.6, 0, 160)) if rng is not None else 0
            width = max(1, int(round((stroke.width or 1.0) * factor * scale)))
            draw.line([tuple(p) for p in segment], fill=ink, width=width, joint="curve")
    return image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image


def augment_strokes(strokes: list[Stroke], size: int, rng: np.random.Generator,
                    settings: StrokeAugment) -> Image.Image:
    """One training sketch: a random mix of the changes above (each by its probability), drawn in mode L."""
    if rng.random() < settings.simplify:
        strokes = simplify(strokes, rng.uniform(*settings.tolerance), rng.uniform(*settings.min_stroke_length))
    if rng.random() < settings.partial:
        strokes = off_centre(shorten(strokes, rng, rng.uniform(*settings.shorten_share)), rng,
                             rng.uniform(*settings.scale))
    if rng.random() < settings.rough:
        strokes = rough(strokes, rng, rng.uniform(*settings.roughness))
    with_pressure = rng.random() < settings.pressure
    return draw_with_pressure(strokes, size, rng if with_pressure else None, settings.pressure_range)


def rough_style(strokes: list[Stroke], size: int, rng: np.random.Generator) -> Image.Image:
    """The "rough" sketch style of the cross-style report: a two-pass wobble (roughness 1.5, above training's
    range), simplified at tolerance 1.0, pressure 0.5–1.3 — settings and seeds training never draws."""
    return draw_with_pressure(rough(simplify(strokes, 1.0, 1.0), rng, 1.5), size, rng, (0.5, 1.3))
