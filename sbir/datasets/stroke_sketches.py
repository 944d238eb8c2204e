"""Stroke-augmented sketches of OpenMoji-ZS's training emoji: the same line art redrawn with stroke-level changes
(``sbir.datasets.stroke_styles``: rough wobble, simplification, uneven pressure, partial and off-centre drawings)
on top of the dataset's own hand-drawn perturbation, with seeds the dataset's sketches and the cross-style "rough"
test set never use. Training reads pixels, so the augmentation is rendered here, ``sketches_per_item`` per emoji,
and joins training through ``train.styles`` like an artwork style (a sketch-only set drawn for ``source``).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from sbir import paths
from sbir.datasets.base import Dataset, DatasetError, register, summarize
from sbir.datasets.openmoji import openmoji_svg_dir, slug
from sbir.datasets.stroke_styles import StrokeAugment, augment_strokes
from sbir.datasets.strokes import SketchStyle, SvgError, line_layer_strokes, perturb_strokes
from sbir.io import atomic_write_text
from sbir.manifest import SPLITS, Manifest, ManifestError, file_sha256, read_manifest, write_manifest


@register("openmoji_strokes")
class OpenMojiStrokes(Dataset):
    """Stroke-augmented redraws of a prepared OpenMoji-ZS's emoji in ``splits`` (sketches only)."""

    def __init__(self, source: str, splits: list[str], sketches_per_item: int, seed: int,
                 image_size: int | None) -> None:
        if not splits or set(splits) - set(SPLITS) or sketches_per_item < 1:
            raise DatasetError(f"openmoji_strokes: splits must be a non-empty subset of {list(SPLITS)} and "
                               f"sketches_per_item ≥ 1, got {list(splits)} and {sketches_per_item}")
        self.source, self.splits, self.seed = source, tuple(splits), seed
        self.sketches_per_item, self.image_size = sketches_per_item, image_size

    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        out_dir = Path(out_dir)
        try:
            source = read_manifest(paths.prepared_dir(self.source))
        except ManifestError as error:
            raise DatasetError(f"openmoji_strokes draws the emoji of prepared '{self.source}': {error}") from error
        size = self.image_size or source.extra.get("params", {}).get("image_size")
        if not isinstance(size, int):
            raise DatasetError("openmoji_strokes: image_size is null and the source manifest records none")
        items = source.select(domain="photo")
        items = items[items["split"].isin(self.splits)].drop_duplicates("instance_id")
        svg_dir, rows, skipped = openmoji_svg_dir(), [], {}
        for hexcode, category, split in tqdm(list(zip(items["instance_id"], items["category"], items["split"])),
                                             desc="openmoji_strokes", unit="emoji", disable=not progress):
            try:
                strokes = line_layer_strokes((svg_dir / f"{hexcode}.svg").read_text(encoding="utf-8"), hexcode)
            except (OSError, SvgError) as error:
                skipped[hexcode] = str(error)
                continue
            for index in range(self.sketches_per_item):
                rng = np.random.default_rng([self.seed, index, zlib.crc32(hexcode.encode()), 104729])
                image = augment_strokes(perturb_strokes(strokes, rng, SketchStyle()), size, rng, StrokeAugment())
                relative = f"images/sketch/{slug(category)}/{hexcode}-s{index}.png"
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                image.save(out_dir / relative, format="PNG", optimize=False)
                rows.append({"path": relative, "domain": "sketch", "category": category, "instance_id": hexcode,
                             "split": split, "content_hash": file_sha256(out_dir / relative)})
        frame = pd.DataFrame(rows)
        if frame.empty:
            raise DatasetError(f"openmoji_strokes: no emoji of '{self.source}' in {list(self.splits)} could be drawn")
        extra = {"domains": ["sketch"], "gallery_for": source.dataset, "style": self.name, "held_out": False,
                 "params": {**self.params(), "image_size": size}, "skipped": skipped,
                 "attribution": source.extra.get("attribution", "")}
        write_manifest(frame, out_dir, dataset=self.name, image_root=".", extra=extra)
        atomic_write_text(out_dir / "DATASET_CARD.md", "\n".join([
            "# openmoji_strokes: stroke-augmented sketches", "", __doc__.strip(), "",
            f"- Parameters: `{json.dumps(extra['params'])}`; skipped: {len(skipped)}", "",
            "## Counts", "", "```json", json.dumps(summarize(frame), indent=2), "```", ""]))
        return read_manifest(out_dir)

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "splits": list(self.splits), "sketches_per_item": self.sketches_per_item,
                "seed": self.seed, "image_size": self.image_size}
