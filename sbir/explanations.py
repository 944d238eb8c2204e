"""Match explanations as data, and their picture: which sketch patch matched which photo patch, how strongly.

A model with the explain capability (``models.interface.MatchExplainer``) returns a ``MatchExplanation``; the
evaluate stage and the service draw it with ``draw_explanation``. Patch coordinates are (row, column) cells of
each image's patch grid, so the picture does not depend on the model's input resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from sbir.images import square_rgb


@dataclass(frozen=True)
class PatchMatch:
    """One correspondence: a sketch patch, the photo patch it matched, and the weight of that match."""

    sketch_patch: tuple[int, int]
    photo_patch: tuple[int, int]
    weight: float


@dataclass(frozen=True)
class MatchExplanation:
    """Why a sketch and a photo match: the score, patch grids, correspondences (strongest first), heatmaps."""

    score: float
    sketch_grid: tuple[int, int]
    photo_grid: tuple[int, int]
    matches: tuple[PatchMatch, ...]
    sketch_heatmap: np.ndarray  # (rows, cols) of sketch_grid, values in [0, 1]
    photo_heatmap: np.ndarray

    def __post_init__(self) -> None:
        for name, grid in (("sketch", self.sketch_grid), ("photo", self.photo_grid)):
            heatmap = getattr(self, f"{name}_heatmap")
            if tuple(heatmap.shape) != tuple(grid):
                raise ValueError(f"{name}_heatmap has shape {heatmap.shape}, expected the grid {grid}")
            if heatmap.size and (np.nanmin(heatmap) < 0 or np.nanmax(heatmap) > 1 or not np.isfinite(heatmap).all()):
                raise ValueError(f"{name}_heatmap values must be finite and in [0, 1]")
        for match in self.matches:
            for name, cell, grid in (("sketch", match.sketch_patch, self.sketch_grid),
                                     ("photo", match.photo_patch, self.photo_grid)):
                if not (0 <= cell[0] < grid[0] and 0 <= cell[1] < grid[1]):
                    raise ValueError(f"{name} patch {cell} lies outside the {grid} patch grid")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the service answers with it)."""
        return {"score": float(self.score), "sketch_grid": list(self.sketch_grid), "photo_grid": list(self.photo_grid),
                "matches": [{"sketch_patch": list(m.sketch_patch), "photo_patch": list(m.photo_patch),
                             "weight": float(m.weight)} for m in self.matches],
                "sketch_heatmap": np.round(self.sketch_heatmap, 4).tolist(),
                "photo_heatmap": np.round(self.photo_heatmap, 4).tolist()}


@dataclass(frozen=True)
class Synthesis:
    """A photo-like picture for a sketch, assembled from gallery photo patches (ZSE-SBIR's patch replacement).

    ``sources[r, c]`` = (photo index, row, col): the gallery photo and its patch that cell (r, c) of the sketch's
    grid was replaced by; ``weights[r, c]`` how strongly they matched."""

    image: Image.Image
    grid: tuple[int, int]
    sources: np.ndarray  # (rows, cols, 3) int
    weights: np.ndarray  # (rows, cols) float
    num_photos: int

    def __post_init__(self) -> None:
        rows, cols = self.grid
        if self.sources.shape != (rows, cols, 3) or self.weights.shape != (rows, cols):
            raise ValueError(f"sources {self.sources.shape} / weights {self.weights.shape} do not fit the grid "
                             f"{self.grid}")
        photo, row, col = self.sources[..., 0], self.sources[..., 1], self.sources[..., 2]
        if ((photo < 0) | (photo >= self.num_photos) | (row < 0) | (row >= rows) | (col < 0) | (col >= cols)).any():
            raise ValueError(f"a source patch lies outside the {self.num_photos} photos' {self.grid} grids")

    def to_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "sources": self.sources.tolist(),
                "weights": np.round(self.weights, 4).tolist(), "num_photos": self.num_photos}


def assemble_patches(photos: Sequence[Image.Image], sources: np.ndarray, size: int) -> Image.Image:
    """The picture of ``Synthesis``: each cell of a ``size`` square copied from its source photo's cell."""
    rows, cols = sources.shape[:2]
    squares = [square_rgb(photo, size) for photo in photos]
    canvas = Image.new("RGB", (size, size), "white")
    for r in range(rows):
        for c in range(cols):
            index, source_r, source_c = (int(v) for v in sources[r, c])
            box = (source_c * size // cols, source_r * size // rows, (source_c + 1) * size // cols,
                   (source_r + 1) * size // rows)
            patch = squares[index].crop(box)
            target = (c * size // cols, r * size // rows, (c + 1) * size // cols, (r + 1) * size // rows)
            canvas.paste(patch.resize((target[2] - target[0], target[3] - target[1])), target[:2])
    return canvas


def _overlay(image: Image.Image, heatmap: np.ndarray, size: int) -> Image.Image:
    """The image with the heatmap blended in red (nearest-cell upsampling keeps patch borders visible)."""
    base = square_rgb(image, size)
    if not heatmap.size:
        return base
    cells = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), mode="L")
    mask = cells.resize((size, size), Image.Resampling.NEAREST).point(lambda v: int(v * 0.6))
    return Image.composite(Image.new("RGB", (size, size), (230, 30, 30)), base, mask)


def _centre(cell: Sequence[int], grid: Sequence[int], size: int, x_offset: int) -> tuple[float, float]:
    return (x_offset + (cell[1] + 0.5) * size / grid[1], (cell[0] + 0.5) * size / grid[0])


def draw_explanation(sketch: Image.Image, photo: Image.Image, explanation: MatchExplanation, size: int = 224,
                     gap: int = 32, max_lines: int = 12) -> Image.Image:
    """Sketch and photo side by side with their heatmaps, lines joining the strongest matched patches."""
    canvas = Image.new("RGB", (2 * size + gap, size + 20), "white")
    canvas.paste(_overlay(sketch, explanation.sketch_heatmap, size), (0, 0))
    canvas.paste(_overlay(photo, explanation.photo_heatmap, size), (size + gap, 0))
    draw = ImageDraw.Draw(canvas)
    shown = explanation.matches[:max_lines]
    strongest = max((abs(m.weight) for m in shown), default=1.0) or 1.0
    for match in shown:
        start = _centre(match.sketch_patch, explanation.sketch_grid, size, 0)
        end = _centre(match.photo_patch, explanation.photo_grid, size, size + gap)
        width = 1 + int(round(3 * abs(match.weight) / strongest))
        draw.line([start, end], fill=(30, 110, 230), width=width)
        for x, y in (start, end):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=(30, 110, 230), width=2)
    draw.text((4, size + 4), f"score {explanation.score:.3f} · {len(explanation.matches)} matches", fill=(0, 0, 0))
    return ImageOps.expand(canvas, border=1, fill=(200, 200, 200))


def explanation_sheet(rows: Sequence[tuple[str, Image.Image]], title: str) -> Image.Image:
    """Labelled pictures (explanations, syntheses) stacked into one sheet, a caption above each."""
    width = max((image.width for _, image in rows), default=200)
    height = 24 + sum(image.height + 22 for _, image in rows)
    sheet = Image.new("RGB", (width + 8, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0))
    y = 24
    for caption, image in rows:
        draw.text((4, y + 4), caption, fill=(60, 60, 60))
        sheet.paste(image, (4, y + 20))
        y += image.height + 22
    return sheet
