"""Other artists' renderings of OpenMoji-ZS's emoji: one prepared dataset per artwork style, each a single
domain — colour pictures as photos (Twemoji, Fluent flat, Fluent 3D) or monochrome line art as sketches (Fluent
high contrast, EmojiOne monotone, Symbola). Sources and licences: ``sbir.datasets.artwork_sources``.

- Items: the emoji of a prepared source dataset (``source``, default ``openmoji_zs``) in ``splits``, read from its
  manifest, so ``instance_id`` (the OpenMoji hexcode), ``category`` and ``split`` are the source's by
  construction: an OpenMoji sketch and the Fluent picture of its emoji share an instance id, and the test
  protocol (split, unseen categories) is the source's.
- Matching: by code points without U+FE0F (``sequence_key``); sets named by name match by the emoji's CLDR name,
  then its Unicode character name. Emoji a set lacks are listed as unmatched in the manifest and the card.
- Held out: ``HELD_OUT`` styles (EmojiOne monotone sketches, Fluent 3D photos) are never trained on — training
  refuses them — so their numbers measure generalisation to a style no model saw.
- Validation: the manifest declares its one domain (``domains``) and the dataset it was built for
  (``gallery_for``); a sketch set's instance links resolve against that dataset's photos.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from sbir import paths
from sbir.datasets.artwork_sources import SOURCES, ArtworkSource, Key, emoji_names, sequence_key
from sbir.datasets.base import Dataset, DatasetError, register, summarize
from sbir.datasets.openmoji import emoji_test_file, slug
from sbir.datasets.strokes import SvgError
from sbir.io import atomic_write_text
from sbir.manifest import SPLITS, Manifest, ManifestError, file_sha256, read_manifest, write_manifest

HELD_OUT = ("emojione_mono", "fluent_3d")  # never trained on, not even as augmentation


def artwork_rows(source_frame: pd.DataFrame, artwork: ArtworkSource, index: dict[Key, Any], out_dir: Path,
                 splits: tuple[str, ...], image_size: int, margin: float) -> tuple[pd.DataFrame, dict[str, str]]:
    """Render the artwork of every emoji of ``source_frame`` in ``splits``; manifest rows and the unmatched
    (hexcode → reason)."""
    items = source_frame[source_frame["split"].isin(splits)].dropna(subset=["instance_id"])
    items = items.drop_duplicates("instance_id")
    rows, unmatched = [], {}
    for hexcode, category, split in zip(items["instance_id"], items["category"], items["split"]):
        item = index.get(sequence_key(str(hexcode)) or ())
        if item is None:
            unmatched[str(hexcode)] = f"not in {artwork.package}"
            continue
        try:
            image = artwork.render(item, image_size, margin)
        except SvgError as error:
            unmatched[str(hexcode)] = str(error)
            continue
        relative = f"images/{artwork.domain}/{slug(category)}/{hexcode}.png"
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG", optimize=False)
        rows.append({"path": relative, "domain": artwork.domain, "category": category, "instance_id": hexcode,
                     "split": split, "content_hash": file_sha256(target)})
    return pd.DataFrame(rows), unmatched


def screened(frame: pd.DataFrame, out_dir: Path, min_train_per_category: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Leave out (and delete) training renderings the data gate would reject, saying why: one identical to a test
    rendering of another emoji (monochrome sets draw some alike: 😠 and 😡), and those of a category with fewer
    than ``min_train_per_category`` in train. Test rows are never left out: the test protocol stays the source's."""
    train = frame["split"] == "train"
    leak = train & frame["content_hash"].isin(set(frame.loc[~train, "content_hash"]))
    thin = train & ~leak & (frame[train & ~leak].groupby("category")["path"].transform("size")
                            .reindex(frame.index).fillna(0) < min_train_per_category)
    left_out = {**{i: "identical to a test rendering of another emoji" for i in frame.loc[leak, "instance_id"]},
                **{i: f"its category has < {min_train_per_category} training renderings"
                   for i in frame.loc[thin, "instance_id"]}}
    for relative in frame.loc[leak | thin, "path"]:
        (out_dir / relative).unlink(missing_ok=True)
    return frame[~(leak | thin)].reset_index(drop=True), left_out


class ArtworkSet(Dataset):
    """One artwork style of a prepared source dataset's emoji: a single-domain set (photos or sketches)."""

    artwork: ArtworkSource

    def __init__(self, source: str, splits: list[str] | tuple[str, ...], image_size: int | None,
                 margin: float | None, min_train_per_category: int) -> None:
        unknown = sorted(set(splits) - set(SPLITS))
        if not splits or unknown:
            raise DatasetError(f"{self.name}: splits must be a non-empty subset of {list(SPLITS)}, got {list(splits)}")
        if self.name in HELD_OUT and set(splits) - {"test_unseen"}:
            raise DatasetError(f"{self.name} is a held-out style (never trained on): splits must be [test_unseen], "
                               f"got {list(splits)}")
        margin = self.artwork.margin if margin is None else margin
        if (image_size is not None and image_size < 16) or not 0 <= margin < 0.5:
            raise DatasetError(f"{self.name}: need image_size ≥ 16 (or null: the source's) and 0 ≤ margin < 0.5")
        self.source = source
        self.splits = tuple(splits)
        self.image_size = image_size
        self.margin = margin
        self.min_train_per_category = min_train_per_category

    def source_manifest(self) -> Manifest:
        """The prepared dataset whose emoji this set draws."""
        try:
            return read_manifest(paths.prepared_dir(self.source))
        except ManifestError as error:
            raise DatasetError(f"{self.name} draws the emoji of prepared '{self.source}': {error}") from error

    def resolved_size(self, source: Manifest) -> int:
        """``image_size``, or the source's (its manifest's prepare params) when null."""
        if self.image_size is not None:
            return self.image_size
        size = source.extra.get("params", {}).get("image_size")
        if not isinstance(size, int):
            raise DatasetError(f"{self.name}: image_size is null but the '{self.source}' manifest records no "
                               f"params.image_size; set prepare.{self.name}.image_size")
        return size

    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        out_dir = Path(out_dir)
        source = self.source_manifest()
        size = self.resolved_size(source)
        index = self.artwork.index(emoji_names(emoji_test_file()))
        frame, unmatched = artwork_rows(source.frame, self.artwork, index, out_dir, self.splits, size, self.margin)
        frame, left_out = screened(frame, out_dir, self.min_train_per_category)
        if frame.empty:
            raise DatasetError(f"{self.name}: none of the {len(unmatched)} '{self.source}' emoji in "
                               f"{list(self.splits)} is in {self.artwork.package} ({self.artwork.located()})")
        extra = {"domains": [self.artwork.domain], "gallery_for": source.dataset, "style": self.name,
                 "attribution": self.artwork.attribution, "license": self.artwork.license,
                 "package": f"{self.artwork.package} {self.artwork.version()}",
                 "params": {**self.params(), "image_size": size}, "matched": int(len(frame)),
                 "unmatched": unmatched, "left_out": left_out, "identical_renderings": int(frame["content_hash"].duplicated().sum()),
                 "held_out": self.name in HELD_OUT}
        write_manifest(frame, out_dir, dataset=self.name, image_root=".", extra=extra)
        atomic_write_text(out_dir / "DATASET_CARD.md", self.card(frame, extra))
        return read_manifest(out_dir)

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for provenance."""
        return {"source": self.source, "splits": list(self.splits), "image_size": self.image_size,
                "margin": self.margin, "min_train_per_category": self.min_train_per_category}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": f"{self.artwork.package} + the prepared '{self.source}' manifest",
                "license": self.artwork.license, "attribution": self.artwork.attribution,
                "domains": [self.artwork.domain]}

    def card(self, frame: pd.DataFrame, extra: dict[str, Any]) -> str:
        """A dataset card: source, licence and attribution, how it was built, match counts."""
        per_split = Counter(frame["split"])
        kind = "colour pictures (photos)" if self.artwork.domain == "photo" else "monochrome line art (sketches)"
        return "\n".join([
            f"# {self.name}: {kind}", "",
            f"Built offline from the installed {extra['package']} and the prepared `{self.source}` manifest: the",
            f"{self.name} rendering of each of its emoji in {list(self.splits)}, with the same instance id",
            "(hexcode), category (Unicode subgroup) and split." + (
                " **Held out**: never trained on." if extra["held_out"] else ""), "",
            f"**License:** {self.artwork.license}. {self.artwork.attribution}", "",
            f"- Parameters: `{json.dumps(extra['params'])}`",
            f"- Matched: {extra['matched']} emoji ({dict(sorted(per_split.items()))}); unmatched: "
            f"{len(extra['unmatched'])} ({', '.join(sorted(extra['unmatched'])[:40]) or 'none'}"
            f"{' …' if len(extra['unmatched']) > 40 else ''})",
            f"- Left out: {len(extra['left_out'])} ({'; '.join(f'{k}: {v}' for k, v in sorted(extra['left_out'].items())[:20]) or 'none'})",
            f"- Identical renderings of distinct emoji: {extra['identical_renderings']}", "",
            "## Counts", "", "```json", json.dumps(summarize(frame), indent=2), "```", "",
        ])


for _name, _artwork in SOURCES.items():
    register(_name)(type(f"Artwork_{_name}", (ArtworkSet,), {"artwork": _artwork, "__doc__": _artwork.attribution}))
