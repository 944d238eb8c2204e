"""Twemoji: OpenMoji-ZS's emoji drawn by other artists, photos only — the gallery of a cross-dataset check.

Source: the ``@twemoji/svg`` npm package (version pinned in ``package.json`` / ``package-lock.json``), installed
by ``make setup`` (``npm ci``) into ``node_modules/@twemoji/svg/`` (or the folder ``ZSSBIR_TWEMOJI_SVG_DIR``
names); nothing is downloaded at run time. Twemoji graphics: CC BY 4.0, "Twemoji by Twitter/X and
contributors" (the npm packaging itself is MIT).

- Items: the photo rows of a prepared source dataset (``source``, default ``openmoji_zs``) in ``splits``, read
  from its manifest, so ``instance_id`` (the OpenMoji hexcode), ``category`` (Unicode subgroup) and ``split``
  are the source's by construction: an OpenMoji sketch and the Twemoji photo of its emoji share an instance id.
- Matching: Twemoji names a file by its lowercase code points without leading zeros, joined by ``-``, and
  mostly without the U+FE0F presentation selector (``23-20e3``, ``2764``), OpenMoji by uppercase 4+-digit code
  points, keeping FE0F in some sequences; both sides are compared as code point tuples without FE0F. Emoji
  newer than the Twemoji release are reported unmatched in the manifest metadata and the dataset card.
- Photo: the colour rendering (resvg) scaled to leave ``margin`` of the side white on each side: Twemoji art
  fills its 36-unit canvas, OpenMoji's covers about 70 % of its 72-unit one, and 0.14 puts both at that scale.
- No sketches: validation checks it as a photo-only gallery (manifest metadata ``domains: [photo]``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from sbir import paths
from sbir.datasets.base import Dataset, DatasetError, register, summarize
from sbir.datasets.openmoji import slug
from sbir.datasets.strokes import SvgError, render_photo
from sbir.io import atomic_write_text
from sbir.manifest import SPLITS, Manifest, ManifestError, file_sha256, read_manifest, write_manifest

SVG_DIR_ENV = "ZSSBIR_TWEMOJI_SVG_DIR"
PACKAGE = "@twemoji/svg"
LICENSE = "CC BY 4.0"
ATTRIBUTION = ("Twemoji by Twitter/X and contributors (https://github.com/jdecked/twemoji). "
               "Graphics license: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)")
SELECTOR = 0xFE0F


def twemoji_svg_dir(environ: dict[str, str] | None = None) -> Path:
    """The installed Twemoji SVG folder: ``$ZSSBIR_TWEMOJI_SVG_DIR``, else ``node_modules/@twemoji/svg`` under the
    working directory or the project the code lives in."""
    environ = os.environ if environ is None else environ
    if environ.get(SVG_DIR_ENV):
        candidates = [Path(environ[SVG_DIR_ENV])]
    else:
        candidates = [paths.TWEMOJI_SVG, Path(__file__).resolve().parents[2] / paths.TWEMOJI_SVG]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.svg")):
            return folder
    raise DatasetError(f"Twemoji SVGs not found at {candidates[0]} (no *.svg there): run `make setup` in the "
                       f"repository root (it installs {PACKAGE} from package-lock.json with npm ci), or set "
                       f"{SVG_DIR_ENV} to a folder of Twemoji SVG files")


def sequence_key(code: str) -> tuple[int, ...] | None:
    """An emoji's code points without U+FE0F, from a file stem or hexcode (``0023-FE0F-20E3`` → (0x23, 0x20E3));
    None if it does not spell code points."""
    try:
        points = tuple(int(part, 16) for part in code.strip().replace(" ", "-").split("-"))
    except ValueError:
        return None
    return tuple(p for p in points if p != SELECTOR) or None


def twemoji_index(svg_dir: Path) -> dict[tuple[int, ...], Path]:
    """Code points (FE0F dropped) → SVG file; if two files differ only by FE0F, the one named without it wins."""
    index: dict[tuple[int, ...], Path] = {}
    for path in sorted(svg_dir.glob("*.svg"), key=lambda p: (len(p.stem), p.stem)):
        key = sequence_key(path.stem)
        if key is not None:
            index.setdefault(key, path)
    return index


def package_version(svg_dir: Path) -> str:
    """The installed package's version (its package.json), or 'unknown' for a plain folder of SVGs."""
    try:
        return str(json.loads((svg_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def render_framed(svg_text: str, size: int, margin: float, source: str) -> Image.Image:
    """The colour rendering scaled into the centre of a white ``size``² canvas, ``margin`` of the side each way."""
    inner = max(1, round(size * (1 - 2 * margin)))
    art = render_photo(svg_text, inner, source)
    if inner == size:
        return art
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(art, ((size - inner) // 2, (size - inner) // 2))
    return canvas


def gallery_rows(source: Manifest, svg_dir: Path, out_dir: Path, splits: tuple[str, ...], image_size: int,
                 margin: float) -> tuple[pd.DataFrame, dict[str, str]]:
    """Render the Twemoji photo of every source photo in ``splits``; returns manifest rows and the unmatched
    (hexcode → reason)."""
    items = source.select(domain="photo")
    items = items[items["split"].isin(splits)].drop_duplicates("instance_id")
    index = twemoji_index(svg_dir)
    rows, unmatched = [], {}
    for hexcode, category, split in zip(items["instance_id"], items["category"], items["split"]):
        key = sequence_key(str(hexcode)) if pd.notna(hexcode) else None
        svg = index.get(key) if key else None
        if svg is None:
            unmatched[str(hexcode)] = f"no Twemoji file for these code points in {PACKAGE}"
            continue
        try:
            photo = render_framed(svg.read_text(encoding="utf-8"), image_size, margin, f"{PACKAGE}/{svg.name}")
        except SvgError as error:
            unmatched[str(hexcode)] = str(error)
            continue
        relative = f"images/photo/{slug(category)}/{hexcode}.png"
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        photo.save(target, format="PNG", optimize=False)
        rows.append({"path": relative, "domain": "photo", "category": category, "instance_id": hexcode,
                     "split": split, "content_hash": file_sha256(target)})
    return pd.DataFrame(rows), unmatched


@register("twemoji")
class Twemoji(Dataset):
    """Twemoji colour renderings of a prepared OpenMoji-ZS's emoji: a photo-only gallery."""

    def __init__(self, source: str, splits: list[str] | tuple[str, ...], image_size: int | None,
                 margin: float) -> None:
        unknown = sorted(set(splits) - set(SPLITS))
        if not splits or unknown:
            raise DatasetError(f"twemoji: splits must be a non-empty subset of {list(SPLITS)}, got {list(splits)}")
        if (image_size is not None and image_size < 16) or not 0 <= margin < 0.5:
            raise DatasetError("twemoji: need image_size ≥ 16 (or null: the source's) and 0 ≤ margin < 0.5")
        self.source = source
        self.splits = tuple(splits)
        self.image_size = image_size
        self.margin = margin

    def source_manifest(self) -> Manifest:
        """The prepared dataset whose emoji this gallery draws."""
        try:
            return read_manifest(paths.prepared_dir(self.source))
        except ManifestError as error:
            raise DatasetError(f"twemoji draws the emoji of prepared '{self.source}': {error}") from error

    def resolved_size(self, source: Manifest) -> int:
        """``image_size``, or the source's (its manifest's prepare params) when null."""
        if self.image_size is not None:
            return self.image_size
        size = source.extra.get("params", {}).get("image_size")
        if not isinstance(size, int):
            raise DatasetError(f"twemoji: image_size is null but the '{self.source}' manifest records no "
                               "params.image_size; set prepare.twemoji.image_size")
        return size

    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        out_dir = Path(out_dir)
        source = self.source_manifest()
        svg_dir = twemoji_svg_dir()
        size = self.resolved_size(source)
        frame, unmatched = gallery_rows(source, svg_dir, out_dir, self.splits, size, self.margin)
        if frame.empty:
            raise DatasetError(f"twemoji: none of the {len(unmatched)} '{self.source}' emoji in {list(self.splits)} "
                               f"has a Twemoji file in {svg_dir}")
        duplicates = int(frame["content_hash"].duplicated().sum())
        extra = {"domains": ["photo"], "gallery_for": source.dataset, "attribution": ATTRIBUTION,
                 "license": LICENSE, "package": f"{PACKAGE} {package_version(svg_dir)}",
                 "params": {**self.params(), "image_size": size}, "matched": int(len(frame)),
                 "unmatched": unmatched, "identical_renderings": duplicates}
        write_manifest(frame, out_dir, dataset=self.name, image_root=".", extra=extra)
        atomic_write_text(out_dir / "DATASET_CARD.md", self.card(frame, extra))
        return read_manifest(out_dir)

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for provenance."""
        return {"source": self.source, "splits": list(self.splits), "image_size": self.image_size,
                "margin": self.margin}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": f"npm {PACKAGE} + the prepared '{self.source}' manifest",
                "license": LICENSE, "attribution": ATTRIBUTION, "domains": ["photo"]}

    def card(self, frame: pd.DataFrame, extra: dict[str, Any]) -> str:
        """A dataset card: source, license and attribution, how it was built, match counts."""
        per_split = Counter(frame["split"])
        return "\n".join([
            "# Twemoji (photo-only gallery)", "",
            f"Built offline from the installed {extra['package']} and the prepared `{self.source}` manifest: the",
            f"Twemoji colour rendering of each of its emoji in {list(self.splits)}, with the same instance id",
            "(hexcode), category (Unicode subgroup) and split. No sketches.", "",
            f"**License:** {LICENSE}. {ATTRIBUTION}", "",
            f"- Parameters: `{json.dumps(extra['params'])}`",
            f"- Matched: {extra['matched']} emoji ({dict(sorted(per_split.items()))}); unmatched: "
            f"{len(extra['unmatched'])} ({', '.join(sorted(extra['unmatched'])) or 'none'})",
            f"- Identical renderings of distinct emoji: {extra['identical_renderings']}", "",
            "## Counts", "", "```json", json.dumps(summarize(frame), indent=2), "```", "",
        ])
