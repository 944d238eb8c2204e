"""Tiny on-disk copies of the real benchmarks' layouts (reference §1.4), written with Pillow for loader tests.

Each builder writes a few classes with 8×8 images plus the split files in the ZSE-SBIR or SAKE naming, and
returns a ``Tree`` that says how many manifest rows each (split, domain) should get when the lists are used.
Conventions mirrored from the real files: list lines are ``<path> <label>`` with the label as the last token,
paths may contain spaces, labels index ``cname_cid.txt`` (train, _test) or ``cname_cid_zero.txt`` (_zero), and
SAKE's ``_test`` lists hold out seen-class sketches that ZSE's lists simply leave out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SKETCHY_SPLIT_DIRS = {(21, "zse"): "zeroshot0", (21, "sake"): "zeroshot2", (25, "zse"): "zeroshot1",
                      (25, "sake"): "zeroshot1"}
SKETCHY_CLASSES = {21: (("ape", "teddy_bear", "wine_bottle"), ("bat", "door")),
                   25: (("ape", "bat", "door"), ("teddy_bear", "cup"))}


@dataclass
class Tree:
    """What a builder wrote: where, which classes, and the expected manifest rows in lists mode."""

    root: Path
    split_dir: Path
    seen: list[str]
    unseen: list[str]
    counts: Counter = field(default_factory=Counter)  # (split, domain) → rows
    duplicates: int = 0
    lists: dict[str, list[str]] = field(default_factory=dict)  # list file name → its lines

    def list_path(self, name: str) -> Path:
        return self.split_dir / name


def write_image(path: Path, index: int) -> None:
    """An 8×8 image whose bytes differ per index: grayscale PNG for sketches, RGB JPEG for photos."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image = Image.new("L", (8, 8), 255)
        image.putpixel((index % 8, (index // 8) % 8), 0)
        image.putpixel((7 - index % 8, 3), (index * 29) % 200)
        image.save(path)
    else:
        image = Image.new("RGB", (8, 8), ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256))
        image.putpixel((index % 8, 0), (255, 255, 255))
        image.save(path, format="JPEG", quality=95)


class _Writer:
    """Accumulates list lines and expected counts while images are written."""

    def __init__(self, root: Path, split_dir: Path, seen: Sequence[str], unseen: Sequence[str]) -> None:
        self.tree = Tree(root=root, split_dir=split_dir, seen=list(seen), unseen=list(unseen))
        self.next_index = 0

    def image(self, relative: str, *, same_as: int | None = None) -> str:
        """Write a fresh image (or one byte-identical to image number ``same_as``); returns its path."""
        if same_as is None:
            same_as = self.next_index
            self.next_index += 1
        write_image(self.tree.root / relative, same_as)
        return relative

    def listed(self, list_name: str, relative: str, class_name: str, domain: str) -> None:
        """Add a line to a list file; the part (train/test/zero) decides split and which class ids apply."""
        part = list_name.rsplit("_", 1)[-1].removesuffix(".txt")
        names = self.tree.unseen if part == "zero" else self.tree.seen
        self.tree.lists.setdefault(list_name, []).append(f"{relative} {names.index(class_name)}")
        split = {"train": "train", "test": "test_seen", "zero": "test_unseen"}[part]
        self.tree.counts[(split, domain)] += 1

    def finish(self, *, with_lists: bool = True) -> Tree:
        tree = self.tree
        if with_lists:
            tree.split_dir.mkdir(parents=True, exist_ok=True)
            for name, classes in (("cname_cid.txt", tree.seen), ("cname_cid_zero.txt", tree.unseen)):
                (tree.split_dir / name).write_text("".join(f"{c} {i}\n" for i, c in enumerate(classes)))
            for name, lines in tree.lists.items():
                (tree.split_dir / name).write_text("\n".join(lines) + "\n")
        return tree


def _check(layout: str, allowed: Sequence[str]) -> None:
    if layout not in allowed:
        raise ValueError(f"layout must be one of {allowed}")


def make_sketchy_tree(root: Path, split: int = 21, layout: str = "zse", *, unseen: Sequence[str] | None = None,
                      seen: Sequence[str] | None = None, photos_per_class: int = 2, sketches_per_photo: int = 2,
                      ext_per_class: int = 1, with_lists: bool = True) -> Tree:
    """Sketchy-Extended: originals in 256x256/photo, their duplicates plus ``ext_N.jpg`` in EXTEND_image_sketchy_ready.

    The last sketch of every seen class is held out: listed in the SAKE ``_test`` list, unlisted for ZSE.
    """
    _check(layout, ("zse", "sake"))
    default_seen, default_unseen = SKETCHY_CLASSES[split]
    seen, unseen = list(seen or default_seen), list(unseen or default_unseen)
    w = _Writer(root, root / SKETCHY_SPLIT_DIRS[(split, layout)], seen, unseen)
    ext = 0
    for c, name in enumerate(seen + unseen):
        part = "zero" if name in unseen else "train"
        sketches = []
        for p in range(photos_per_class):
            imagenet_id = f"n{2000000 + c:08d}_{100 + p}"
            for relative in (f"256x256/photo/tx_000000000000_ready/{name}/{imagenet_id}.jpg",
                             f"EXTEND_image_sketchy_ready/{name}/{imagenet_id}.jpg"):
                w.listed(f"all_photo_filelist_{part}.txt", relative, name, "photo")
            original = w.next_index
            w.image(f"256x256/photo/tx_000000000000_ready/{name}/{imagenet_id}.jpg")
            w.image(f"EXTEND_image_sketchy_ready/{name}/{imagenet_id}.jpg", same_as=original)
            w.tree.duplicates += 1
            sketches += [w.image(f"256x256/sketch/tx_000000000000_ready/{name}/{imagenet_id}-{k}.png")
                         for k in range(1, sketches_per_photo + 1)]
        for _ in range(ext_per_class):
            ext += 1
            w.listed(f"all_photo_filelist_{part}.txt", w.image(f"EXTEND_image_sketchy_ready/{name}/ext_{ext}.jpg"),
                     name, "photo")
        held = sketches[-1:] if part == "train" else []
        for relative in sketches:
            if relative not in held:
                w.listed(f"sketch_tx_000000000000_ready_filelist_{part}.txt", relative, name, "sketch")
            elif layout == "sake":
                w.listed("sketch_tx_000000000000_ready_filelist_test.txt", relative, name, "sketch")
    return w.finish(with_lists=with_lists)


def make_tuberlin_tree(root: Path, layout: str = "zse", *, unseen: Sequence[str] = ("hot air balloon", "t-shirt"),
                       seen: Sequence[str] = ("airplane", "alarm clock"), sketches_per_class: int = 3,
                       photos_per_class: int = 2, with_lists: bool = True) -> Tree:
    """TU-Berlin-Extended: class folders with spaces and hyphens; SAKE adds ``png_ready_filelist_test.txt``."""
    _check(layout, ("zse", "sake"))
    w = _Writer(root, root / "zeroshot", seen, unseen)
    for name in list(seen) + list(unseen):
        part = "zero" if name in unseen else "train"
        sketches = [w.image(f"png_ready/{name}/{w.next_index + 1}.png") for _ in range(sketches_per_class)]
        for k in range(photos_per_class):
            w.listed(f"ImageResized_ready_filelist_{part}.txt",
                     w.image(f"ImageResized_ready/{name}/n0{w.next_index:07d}_{k}.JPEG"), name, "photo")
        held = sketches[-1:] if part == "train" else []
        for relative in sketches:
            if relative not in held:
                w.listed(f"png_ready_filelist_{part}.txt", relative, name, "sketch")
            elif layout == "sake":
                w.listed("png_ready_filelist_test.txt", relative, name, "sketch")
    return w.finish(with_lists=with_lists)


def make_quickdraw_tree(root: Path, *, unseen: Sequence[str] = ("palm tree", "bat"),
                        seen: Sequence[str] = ("alarm_clock", "cruise ship"), sketches_per_class: int = 3,
                        photos_per_class: int = 2, folder: Callable[[str], str] = str,
                        with_lists: bool = True) -> Tree:
    """QuickDraw-Extended in the ZSE-SBIR layout; photo file names contain spaces.

    ``folder`` maps a class name to its folder name, e.g. to write ``palm_tree/`` for the listed ``palm tree``.
    """
    w = _Writer(root, root / "zeroshot", seen, unseen)
    for name in list(seen) + list(unseen):
        part = "zero" if name in unseen else "train"
        for k in range(sketches_per_class):
            w.listed(f"sketch_{part}.txt", w.image(f"sketches/{folder(name)}/{5000000 + w.next_index}.png"),
                     name, "sketch")
        for k in range(photos_per_class):
            w.listed(f"all_photo_{part}.txt", w.image(f"images/{folder(name)}/image {k:04d}.jpg"), name, "photo")
    return w.finish(with_lists=with_lists)
