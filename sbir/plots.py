"""Pictures of retrieval results: a grid of sketch queries with their top-k photos, hits marked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

HIT = (40, 170, 60)  # same category
EXACT = (30, 110, 230)  # the very photo the sketch was drawn from
MISS = (210, 50, 50)


def retrieval_grid(query_paths: Sequence[Path], ranked_paths: Sequence[Sequence[Path]],
                   relevance: Sequence[Sequence[int]], labels: Sequence[str], tile: int = 96,
                   border: int = 4, loader: Callable[[Path], Image.Image] | None = None) -> Image.Image:
    """One row per query: the sketch, then its ranked photos framed green (hit), blue (exact) or red (miss).

    ``relevance[i][j]`` is 2 for the exact instance, 1 for a same-category hit, 0 for a miss.
    """
    loader = loader or (lambda p: Image.open(p))
    columns = 1 + max((len(r) for r in ranked_paths), default=0)
    label_height = 14
    grid = Image.new("RGB", (columns * (tile + border), len(query_paths) * (tile + border + label_height)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (query, ranked, marks, label) in enumerate(zip(query_paths, ranked_paths, relevance, labels)):
        top = row * (tile + border + label_height)
        draw.text((2, top), label[:60], fill=(0, 0, 0))
        cells = [(query, None)] + [(p, m) for p, m in zip(ranked, marks)]
        for col, (path, mark) in enumerate(cells):
            with loader(path) as image:
                thumb = ImageOps.pad(image.convert("RGB"), (tile - 2 * border, tile - 2 * border), color="white")
            x, y = col * (tile + border), top + label_height
            colour = (0, 0, 0) if mark is None else {2: EXACT, 1: HIT}.get(int(mark), MISS)
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=colour)
            grid.paste(thumb, (x + border, y + border))
    return grid


def pick_queries(categories: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` queries spread over as many categories as possible (seeded)."""
    rng = np.random.default_rng(seed)
    unique = rng.permutation(np.unique(categories))
    chosen: list[int] = []
    while len(chosen) < min(count, len(categories)):
        for category in unique:
            options = np.setdiff1d(np.flatnonzero(categories == category), chosen)
            if options.size and len(chosen) < count:
                chosen.append(int(rng.choice(options)))
    return np.asarray(chosen, dtype=np.int64)
