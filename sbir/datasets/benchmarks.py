"""Loaders for the published ZS-SBIR benchmarks: Sketchy-Ext (21/25 classes), TU-Berlin-Ext (30), QuickDraw-Ext (30).

The user brings the images, ideally with the split files in the ZSE-SBIR or SAKE layout (reference §1.4).
``prepare`` indexes the images in place and writes only ``manifest.parquet``. Users who have the image folders
but no split files can pass ``split_source="folders"``, which rebuilds the split from the class folders and the
shipped unseen-class list (``sbir/resources/classes``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pandas as pd
from tqdm.auto import tqdm

from sbir.categories import normalize_category
from sbir.datasets.base import Dataset, DatasetError, register
from sbir.datasets.benchmark_lists import (Problems, class_folders, hold_out, list_images, match_unseen,
                                           read_class_ids, read_class_list, read_file_list,
                                           shipped_class_list)
from sbir.manifest import Manifest, file_sha256, read_manifest, write_manifest

SPLIT_SOURCES = ("lists", "folders")
#: (list-file part, manifest split, class file its labels index). ``test`` lists are optional (SAKE only).
_PARTS = (("train", "train", "cname_cid.txt"), ("test", "test_seen", "cname_cid.txt"),
          ("zero", "test_unseen", "cname_cid_zero.txt"))
_REFERENCE = "reference/zssbir-benchmarks.md §1.2 (counted from the ZSE-SBIR/SAKE split files)"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where one benchmark's files live and what the field reports about it."""

    title: str
    split_dirs: dict[str, str]  # layout → folder (under root) that holds the split files
    lists: tuple[tuple[str, str], ...]  # (domain, stem); files are f"{stem}_{train|test|zero}.txt"
    image_dirs: tuple[tuple[str, str, str], ...]  # (domain, folder under root, file pattern for the tree)
    unseen_file: str
    split_origin: str
    citations: tuple[str, ...]
    expected: dict[str, Any]
    notes: tuple[str, ...] = ()
    trap_note: str = ""  # how users most often point the loader at the wrong split folder
    layout_notes: dict[str, str] = field(default_factory=dict)  # why a layout is not offered


class BenchmarkDataset(Dataset):
    """A published benchmark read from the user's folder; subclasses only set ``spec`` (and instance ids)."""

    spec: ClassVar[BenchmarkSpec]
    drop_duplicate_photos: bool = False  # a parameter only where photos have instance ids (Sketchy)

    def __init__(self, root: str | Path, *, layout: str = "zse", split_source: str = "lists",
                 split_dir: str | None = None, held_out_sketches_per_class: int = 50, seed: int = 0,
                 unseen_classes_file: str | Path | None = None, check_classes: bool = True,
                 max_reported: int = 20, workers: int = 4) -> None:
        if layout not in self.spec.split_dirs:
            why = self.spec.layout_notes.get(layout, "")
            raise DatasetError(f"{self.name}: unknown layout {layout!r}; choose one of {sorted(self.spec.split_dirs)}"
                               + (f" ({why})" if why else ""))
        if split_source not in SPLIT_SOURCES:
            raise DatasetError(f"{self.name}: split_source must be one of {SPLIT_SOURCES}, got {split_source!r}")
        if held_out_sketches_per_class < 0:
            raise DatasetError(f"{self.name}: held_out_sketches_per_class must be >= 0")
        self.root = Path(root)
        self.layout = layout
        self.split_source = split_source
        self.split_dir = split_dir or self.spec.split_dirs[layout]
        self.held_out = held_out_sketches_per_class
        self.seed = seed
        self.unseen_classes_file = Path(unseen_classes_file) if unseen_classes_file else None
        self.check_classes = check_classes
        self.max_reported = max_reported
        self.workers = max(1, workers)

    # ----- facts -----------------------------------------------------------------------------------------------
    def unseen_classes(self) -> list[str]:
        """The unseen (test) class names: the user's override file, else the shipped list."""
        if self.unseen_classes_file is not None:
            return read_class_list(self.unseen_classes_file)
        return shipped_class_list(self.spec.unseen_file)

    def instance_id(self, path: str, domain: str) -> str | None:
        """The photo a sketch was drawn from (or a photo's own id); None where the benchmark has no pairing."""
        return None

    def _unseen_source(self) -> str:
        return str(self.unseen_classes_file or self.spec.unseen_file)

    def describe(self) -> dict[str, Any]:
        """Citations, split origin and the reference's counts, so a user can compare their manifest."""
        spec = self.spec
        return {"name": self.name, "title": spec.title, "citations": list(spec.citations),
                "split_origin": spec.split_origin, "layout": self.layout, "split_source": self.split_source,
                "split_dir": self.split_dir, "unseen_class_list": self._unseen_source(),
                "unseen_classes": self.unseen_classes(), "expected_counts": spec.expected,
                "expected_counts_source": _REFERENCE, "notes": list(spec.notes)}

    def expected_tree(self) -> str:
        """The folder tree this loader expects, for error messages."""
        lines = [f"{self.root}/"]
        lines += [f"  {folder}/{pattern}" for _, folder, pattern in self.spec.image_dirs]
        if self.split_source == "lists":
            lines += [f"  {self.split_dir}/", "    cname_cid.txt, cname_cid_zero.txt"]
            lines += [f"    {stem}_{{train,zero}}.txt   (+ {stem}_test.txt, optional)" for _, stem in self.spec.lists]
            lines.append("  list lines: '<path relative to root> <integer label>' (label = last token)")
        source = "split files" if self.split_source == "lists" else "class folders, no split files"
        return f"expected layout {self.layout!r} ({source}):\n" + "\n".join(lines)

    # ----- prepare ---------------------------------------------------------------------------------------------
    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        """Index the user's images in place and write ``out_dir/manifest.parquet``."""
        out_dir = Path(out_dir)
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: dataset root {str(self.root)!r} is not a folder "
                               f"(resolved: {self.root.resolve()}).\n{self.expected_tree()}")
        try:
            frame, extra = self._index_lists() if self.split_source == "lists" else self._index_folders()
        except DatasetError as error:  # helpers name files, not the dataset; say which dataset too
            if str(error).startswith(f"{self.name}:"):
                raise
            raise DatasetError(f"{self.name}: {error}") from error
        if not (frame["split"] == "test_unseen").any():
            raise DatasetError(f"{self.name}: no unseen-class images found under {self.root} "
                               f"(split_source={self.split_source!r}); the zero-shot test split would be empty")
        frame["instance_id"] = [self.instance_id(p, d) for p, d in zip(frame["path"], frame["domain"])]
        frame, duplicates, dropped = self._deduplicate(frame)
        frame["content_hash"] = self._hash_all(frame["path"].tolist(), progress=progress)
        extra.update({"layout": self.layout, "split_source": self.split_source, "duplicate_photos": duplicates,
                      "dropped_duplicate_photos": dropped, "unseen_class_list": self._unseen_source()})
        write_manifest(frame, out_dir, dataset=self.name, image_root=_stored_root(self.root, out_dir), extra=extra)
        return read_manifest(out_dir)

    def _index_lists(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Rows from the published split files; every missing listed image is reported together."""
        split_dir = self.root / self.split_dir
        required = [split_dir / "cname_cid.txt", split_dir / "cname_cid_zero.txt"]
        required += [split_dir / f"{stem}_{part}.txt" for _, stem in self.spec.lists for part in ("train", "zero")]
        missing = [path for path in required if not path.is_file()]
        if missing:
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("zeroshot"))
            hint = f"\nSplit folders found under the root: {found or 'none'}."
            hint += f"\nNote: {self.spec.trap_note}" if self.spec.trap_note else ""
            hint += "\nWithout split files, split_source='folders' builds the split from the class folders."
            raise DatasetError(f"{self.name}: missing split file(s):\n" + "\n".join(f"  {p}" for p in missing)
                               + f"\n{self.expected_tree()}{hint}")
        classes = {name: read_class_ids(split_dir / name) for name in ("cname_cid.txt", "cname_cid_zero.txt")}
        if self.check_classes:
            self._check_split_classes(split_dir, classes["cname_cid.txt"], classes["cname_cid_zero.txt"])
        rows: list[tuple[str, str, str, str]] = []
        absent = Problems(self.max_reported)
        used: list[str] = []
        for domain, stem in self.spec.lists:
            for part, split, class_file in _PARTS:
                list_path = split_dir / f"{stem}_{part}.txt"
                if part == "test" and not list_path.is_file():
                    continue
                used.append(f"{self.split_dir}/{list_path.name}")
                names = classes[class_file]
                for entry in read_file_list(list_path, names, split_dir / class_file, max_reported=self.max_reported):
                    if not (self.root / entry.path).is_file():
                        absent.add(f"{list_path}:{entry.line}: {entry.path}")
                    rows.append((entry.path, domain, names[entry.label], split))
        absent.raise_if_any(f"{self.name}: listed image file(s) do not exist under root {self.root}")
        return _frame(rows), {"split_dir": self.split_dir, "split_files": used}

    def _check_split_classes(self, split_dir: Path, seen: dict[int, str], zero: dict[int, str]) -> None:
        """Catch split files of another split (e.g. zeroshot1 given to sketchy21) and seen/unseen overlap."""
        unseen = {normalize_category(name) for name in self.unseen_classes()}
        foreign = sorted(name for name in zero.values() if normalize_category(name) not in unseen)
        leaked = sorted(name for name in seen.values() if normalize_category(name) in unseen)
        source = self._unseen_source()
        if foreign:
            raise DatasetError(
                f"{self.name}: {split_dir / 'cname_cid_zero.txt'} names class(es) {foreign} that are not in the "
                f"unseen list {source}; these split files belong to another split.\n"
                + (f"{self.spec.trap_note}\n" if self.spec.trap_note else "")
                + "(pass check_classes=False to index them anyway)")
        if leaked:
            raise DatasetError(f"{self.name}: {split_dir / 'cname_cid.txt'} lists unseen class(es) {leaked} "
                               f"(from {source}) among the training classes; seen and unseen must not overlap")

    def _index_folders(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Rows from the class folders: unseen classes → test_unseen, others → train plus held-out test_seen."""
        dirs = [(domain, folder, self.root / folder) for domain, folder, _ in self.spec.image_dirs]
        missing = [str(path) for _, _, path in dirs if not path.is_dir()]
        if missing:
            raise DatasetError(f"{self.name}: missing image folder(s) {missing}.\n{self.expected_tree()}")
        unseen = self.unseen_classes()
        unseen_keys = {normalize_category(name) for name in unseen}
        list_name = self._unseen_source()
        rows: list[tuple[str, str, str, str]] = []
        category: dict[str, str] = {}  # class key → the first folder name seen, so spelling is one per class
        empty = Problems(self.max_reported)
        for domain, folder, path in dirs:
            folders = class_folders(path)
            match_unseen(unseen, folders, path, list_name)
            for key, name in folders.items():
                category.setdefault(key, name)
                files = list_images(path / name)
                if key in unseen_keys and not files:
                    empty.add(f"{path / name}: unseen class folder holds no images")
                held = (hold_out(files, self.held_out, seed=self.seed, key=f"{folder}/{key}")
                        if domain == "sketch" and key not in unseen_keys else set())
                for file in files:
                    split = "test_unseen" if key in unseen_keys else "test_seen" if file in held else "train"
                    rows.append((str(PurePosixPath(folder, name, file)), domain, category[key], split))
        empty.raise_if_any(f"{self.name}: empty unseen-class folder(s)")
        return _frame(rows), {"held_out_sketches_per_class": self.held_out, "seed": self.seed,
                              "image_dirs": [folder for _, folder, _ in dirs]}

    def _deduplicate(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
        """Count photos listed twice under one instance id; drop the later-folder copies when asked."""
        photos = frame[(frame["domain"] == "photo") & frame["instance_id"].notna()]
        duplicates = int(photos.duplicated(subset=["split", "instance_id"]).sum())
        if not self.drop_duplicate_photos or not duplicates:
            return frame, duplicates, 0
        # Keep the copy in the earliest image folder of the spec: Sketchy's original 256x256/photo one.
        folders = [folder for _, folder, _ in self.spec.image_dirs]
        rank = photos["path"].map(lambda p: next((i for i, f in enumerate(folders) if p.startswith(f + "/")),
                                                 len(folders)))
        ordered = photos.assign(_rank=rank).sort_values("_rank", kind="stable")
        drop = ordered.index[ordered.duplicated(subset=["split", "instance_id"], keep="first")]
        return frame.drop(index=drop).reset_index(drop=True), duplicates, int(len(drop))

    def _hash_all(self, paths: list[str], *, progress: bool) -> list[str]:
        """SHA-256 of every image, in order, on a few threads (hashing releases the GIL; disks like company)."""
        hashes: list[str] = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool, \
                tqdm(total=len(paths), desc=f"{self.name}: hashing", unit="img", disable=not progress) as bar:
            for chunk in _chunks(paths, 2048):  # bounded number of pending futures on 300k-image datasets
                for digest in pool.map(self._hash_one, chunk):
                    hashes.append(digest)
                    bar.update(1)
        return hashes

    def _hash_one(self, relative: str) -> str:
        try:
            return file_sha256(self.root / relative)
        except OSError as error:
            raise DatasetError(f"{self.name}: cannot read image {self.root / relative} ({error})") from error


def _frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["path", "domain", "category", "split"])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _stored_root(root: Path, out_dir: Path) -> str:
    """Image root as written in the manifest: relative to the output folder when the user gave a relative root."""
    if root.is_absolute():
        return str(root)
    try:
        return os.path.relpath(root.resolve(), out_dir.resolve())
    except ValueError:  # different drives on Windows
        return str(root.resolve())


# ----- Sketchy-Extended --------------------------------------------------------------------------------------------
_SKETCHY_IMAGES = (
    ("sketch", "256x256/sketch/tx_000000000000_ready", "<class>/<imagenet_id>-<k>.png"),
    ("photo", "256x256/photo/tx_000000000000_ready", "<class>/<imagenet_id>.jpg"),
    ("photo", "EXTEND_image_sketchy_ready", "<class>/{<imagenet_id>.jpg, ext_<n>.jpg}"),
)
_SKETCHY_LISTS = (("sketch", "sketch_tx_000000000000_ready_filelist"), ("photo", "all_photo_filelist"))
_SKETCHY_CITATIONS = (
    "Sangkloy et al., The Sketchy Database, SIGGRAPH 2016 (sketches and 12,500 photos)",
    "Liu et al., Deep Sketch Hashing, CVPR 2017 (the 60,502 extended photos)",
    "Liu et al., SAKE, ICCV 2019 and Lin et al., ZSE-SBIR, CVPR 2023 (the split files)",
)
_SKETCHY_TRAP = ("split folder naming trap: ZSE-SBIR calls the 21-class split 'zeroshot0' (layout='zse'), "
                 "SAKE/DSN call it 'zeroshot2' (layout='sake'); 'zeroshot1' is the 25-class split in both "
                 "(dataset sketchy25).")
_SKETCHY_NOTES = (
    _SKETCHY_TRAP,
    "The published photo lists hold the 12,500 original photos twice (256x256/photo and "
    "EXTEND_image_sketchy_ready, same ImageNet id); kept by default, drop_duplicate_photos=True keeps one.",
)
_SKETCHY_DUPLICATES = {"duplicate_photos": 12500}


class _Sketchy(BenchmarkDataset):
    """Sketchy-Extended: sketches and photos share ImageNet ids, so instance ids link sketches to photos."""

    _SKETCH = re.compile(r"^(n\d+_\d+)-\d+\.png$", re.IGNORECASE)
    _PHOTO = re.compile(r"^(n\d+_\d+)\.jpe?g$", re.IGNORECASE)

    def __init__(self, root: str | Path, *, drop_duplicate_photos: bool = False, **params: Any) -> None:
        super().__init__(root, **params)
        self.drop_duplicate_photos = drop_duplicate_photos

    def instance_id(self, path: str, domain: str) -> str | None:
        """``<cls>/<imagenet_id>`` for sketches and original photos (both copies); None for ``ext_<n>.jpg``."""
        pure = PurePosixPath(path)
        match = (self._SKETCH if domain == "sketch" else self._PHOTO).match(pure.name)
        return f"{pure.parent.name}/{match.group(1)}" if match else None


@register("sketchy21")
class Sketchy21(_Sketchy):
    """Sketchy-Extended with the 21 unseen classes of Yelamarthi et al. (ECCV'18)."""

    spec = BenchmarkSpec(
        title="Sketchy-Extended, 21-class zero-shot split",
        split_dirs={"zse": "zeroshot0", "sake": "zeroshot2"},
        lists=_SKETCHY_LISTS, image_dirs=_SKETCHY_IMAGES, unseen_file="sketchy21_unseen.txt",
        split_origin="Yelamarthi et al., A Zero-Shot Framework for SBIR, ECCV 2018; lists from ZSE-SBIR zeroshot0 "
                     "(SAKE zeroshot2 lists are shared via SAKE issue #9)",
        citations=_SKETCHY_CITATIONS, notes=_SKETCHY_NOTES, trap_note=_SKETCHY_TRAP,
        expected={"train": {"classes": 104, "sketch": 57587, "photo": 72949},
                  "test_seen": {"sketch": 5200, "note": "derived: 104 x 50 held-out sketches; ZSE ships no _test "
                                                        "list, so they are in no list there"},
                  "test_unseen": {"classes": 21, "sketch": 12694, "photo": 12553,
                                  "note": "photos = 2,100 from 256x256/photo + 10,453 from EXTEND_image_sketchy_ready"},
                  **_SKETCHY_DUPLICATES},
    )


@register("sketchy25")
class Sketchy25(_Sketchy):
    """Sketchy-Extended with the 25 unseen classes of the ZSIH/SAKE lists."""

    spec = BenchmarkSpec(
        title="Sketchy-Extended, 25-class zero-shot split",
        split_dirs={"zse": "zeroshot1", "sake": "zeroshot1"},
        lists=_SKETCHY_LISTS, image_dirs=_SKETCHY_IMAGES, unseen_file="sketchy25_unseen.txt",
        split_origin="Shen et al., ZSIH, CVPR 2018 / SAKE lists (zeroshot1; byte-identical in ZSE-SBIR)",
        citations=_SKETCHY_CITATIONS, notes=_SKETCHY_NOTES, trap_note=_SKETCHY_TRAP,
        expected={"train": {"classes": 100, "sketch": 55252, "photo": 68401},
                  "test_seen": {"sketch": 5000, "note": "50 per seen class, SAKE's _test list"},
                  "test_unseen": {"classes": 25, "sketch": 15229, "photo": 17101,
                                  "note": "photos = 2,500 from 256x256/photo + 14,601 from EXTEND_image_sketchy_ready"},
                  **_SKETCHY_DUPLICATES},
    )


@register("tuberlin30")
class TUBerlin30(BenchmarkDataset):
    """TU-Berlin-Extended with the 30 unseen classes of the ZSIH/SAKE lists (class folders contain spaces)."""

    spec = BenchmarkSpec(
        title="TU-Berlin-Extended, 30-class zero-shot split",
        split_dirs={"zse": "zeroshot", "sake": "zeroshot"},
        lists=(("sketch", "png_ready_filelist"), ("photo", "ImageResized_ready_filelist")),
        image_dirs=(("sketch", "png_ready", "<class>/<id>.png"),
                    ("photo", "ImageResized_ready", "<class>/<name>.JPEG")),
        unseen_file="tuberlin30_unseen.txt",
        split_origin="Shen et al., ZSIH, CVPR 2018 / SAKE lists (TUBerlin/zeroshot; identical in ZSE-SBIR)",
        citations=("Eitz et al., How Do Humans Sketch Objects?, SIGGRAPH 2012 (sketches)",
                   "Zhang et al., SketchNet, CVPR 2016 (the extended photos)",
                   "Liu et al., SAKE, ICCV 2019 and Lin et al., ZSE-SBIR, CVPR 2023 (the split files)"),
        notes=("ZSE-SBIR and SAKE use the same folder names; only SAKE ships png_ready_filelist_test.txt.",
               "Not doodle2search's or SEM-PCYC's random TU-Berlin splits."),
        expected={"train": {"classes": 220, "sketch": 15400, "photo": None},
                  "test_seen": {"sketch": 2200, "note": "SAKE png_ready_filelist_test.txt"},
                  "test_unseen": {"classes": 30, "sketch": 2400, "photo": 27989}},
    )


@register("quickdraw30")
class QuickDraw30(BenchmarkDataset):
    """QuickDraw-Extended (Dey et al.) with its 30 unseen classes, in the ZSE-SBIR layout."""

    spec = BenchmarkSpec(
        title="QuickDraw-Extended, 30-class zero-shot split",
        split_dirs={"zse": "zeroshot"},
        layout_notes={"sake": "SAKE/DSN publish no QuickDraw lists; use the ZSE-SBIR lists or split_source='folders'"},
        lists=(("sketch", "sketch"), ("photo", "all_photo")),
        image_dirs=(("sketch", "sketches", "<class>/<id>.png"), ("photo", "images", "<class>/<name>.jpg")),
        unseen_file="quickdraw30_unseen.txt",
        split_origin="Dey et al., Doodle to Search, CVPR 2019; lists from ZSE-SBIR datasets/QuickDraw/zeroshot",
        citations=("Dey et al., Doodle to Search: Practical Zero-Shot Sketch-Based Image Retrieval, CVPR 2019",
                   "Lin et al., ZSE-SBIR, CVPR 2023 (the split files)"),
        notes=("Image file names may contain spaces.",
               "The 80 training classes are shipped as quickdraw80_seen.txt for reference."),
        expected={"train": {"classes": 80, "sketch": None, "photo": None},
                  "test_unseen": {"classes": 30, "sketch": 92291, "photo": 54151}},
    )
