"""Reading the published ZS-SBIR split files, and building a split from a folder tree instead.

Formats (reference §1.4): a file-list line is ``<relative path> <int label>``, where the label is the LAST
whitespace token because paths may contain spaces; a ``cname_cid*.txt`` line is ``<class name> <int id>``
(class names may contain spaces too). Labels of train and held-out (``_test``) lists index
``cname_cid.txt``; labels of zero-shot (``_zero``) lists index ``cname_cid_zero.txt``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from sbir.categories import normalize_category
from sbir.datasets.base import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ListEntry:
    """One line of a file list: the image path (relative to the dataset root) and where it was read."""

    path: str
    label: int
    source: Path
    line: int


class Problems:
    """Collects errors of one kind so the user sees many at once instead of fixing them one run at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.shown: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.shown) < self.limit:
            self.shown.append(message)

    def raise_if_any(self, headline: str) -> None:
        """Raise one DatasetError listing the collected problems (the first ``limit`` of them)."""
        if not self.count:
            return
        more = f"\n  ... and {self.count - len(self.shown)} more" if self.count > len(self.shown) else ""
        body = "\n".join(f"  {message}" for message in self.shown)
        raise DatasetError(f"{headline} ({self.count} problem(s)):\n{body}{more}")


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file with their 1-based numbers, trailing whitespace removed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error})") from error
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error
    return [(number, line.rstrip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _split_last_int(line: str) -> tuple[str, int] | None:
    """('<text>', int) from '<text> <int>', where text may contain spaces; None when malformed."""
    parts = line.strip().rsplit(maxsplit=1)
    if len(parts) != 2:
        return None
    try:
        return parts[0].strip(), int(parts[1])
    except ValueError:
        return None


def read_class_ids(path: Path) -> dict[int, str]:
    """Map class id → class name from a ``cname_cid*.txt`` file; malformed or repeated ids raise DatasetError."""
    classes: dict[int, str] = {}
    problems = Problems(limit=20)
    for number, line in _numbered_lines(path):
        parsed = _split_last_int(line)
        if parsed is None:
            problems.add(f"{path}:{number}: expected '<class name> <integer id>', got {line!r}")
        elif parsed[1] in classes:
            problems.add(f"{path}:{number}: id {parsed[1]} already used by class {classes[parsed[1]]!r}")
        else:
            classes[parsed[1]] = parsed[0]
    problems.raise_if_any(f"{path}: malformed class list")
    if not classes:
        raise DatasetError(f"{path}: class list is empty; expected lines '<class name> <integer id>'")
    return classes


def _id_range(classes: dict[int, str]) -> str:
    ids = sorted(classes)
    contiguous = ids == list(range(ids[0], ids[-1] + 1))
    return f"{ids[0]}..{ids[-1]}" if contiguous else ", ".join(map(str, ids))


def read_file_list(path: Path, classes: dict[int, str], classes_file: Path, *, max_reported: int) -> list[ListEntry]:
    """Entries of one file list; every malformed line or unknown label is reported (file:line) in one error."""
    entries: list[ListEntry] = []
    problems = Problems(max_reported)
    for number, line in _numbered_lines(path):
        parsed = _split_last_int(line)
        if parsed is None:
            problems.add(f"{path}:{number}: expected '<relative path> <integer label>', got {line!r}")
            continue
        relative, label = parsed
        relative = relative.replace("\\", "/")
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts:
            problems.add(f"{path}:{number}: path {relative!r} must be relative to the dataset root")
        elif label not in classes:
            problems.add(f"{path}:{number}: label {label} is not an id in {classes_file.name} "
                         f"(ids {_id_range(classes)})")
        else:
            entries.append(ListEntry(path=str(pure), label=label, source=path, line=number))
    problems.raise_if_any(f"{path}: malformed file list")
    return entries


def read_class_list(path: Path | str) -> list[str]:
    """Class names of a one-class-per-line text file (a user's override of a shipped list)."""
    names = [line.strip() for _, line in _numbered_lines(Path(path))]
    if not names:
        raise DatasetError(f"{path}: class list is empty; expected one class name per line")
    return names


def shipped_class_list(file_name: str) -> list[str]:
    """A class list shipped in ``sbir/resources/classes`` (see the README there for each list's source)."""
    resource = resources.files("sbir").joinpath("resources", "classes", file_name)
    return [line.strip() for line in resource.read_text(encoding="utf-8").splitlines() if line.strip()]


def class_folders(directory: Path) -> dict[str, str]:
    """Normalized class key → folder name for the class folders in ``directory``; clashes raise DatasetError."""
    folders: dict[str, str] = {}
    for child in sorted(directory.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        key = normalize_category(child.name)
        if key in folders:
            raise DatasetError(f"{directory}: folders {folders[key]!r} and {child.name!r} name the same class "
                               "(case, spaces, underscores and hyphens are ignored when matching); merge or rename one")
        folders[key] = child.name
    return folders


def list_images(directory: Path) -> list[str]:
    """Image file names directly inside ``directory``, sorted (hidden files and non-images skipped)."""
    return sorted(child.name for child in directory.iterdir()
                  if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_SUFFIXES)


def match_unseen(unseen: list[str], folders: dict[str, str], directory: Path, list_name: str) -> None:
    """Raise DatasetError naming every unseen class that has no folder in ``directory``."""
    missing = [name for name in unseen if normalize_category(name) not in folders]
    if missing:
        shown = ", ".join(sorted(folders.values())[:40]) or "<none>"
        raise DatasetError(
            f"{directory}: no folder for unseen class(es) {missing} from {list_name} "
            f"(matching ignores case, spaces, underscores and hyphens; unseen_classes_file=... gives another list). "
            f"Class folders found there: {shown}")


def hold_out(files: list[str], count: int, *, seed: int, key: str) -> set[str]:
    """A seeded sample of ``count`` files to hold out, at most half the class so training keeps some.

    Seeded per class key, so adding or removing one class does not reshuffle the others.
    """
    count = min(count, len(files) // 2)
    if count <= 0:
        return set()
    return set(random.Random(f"{seed}:{key}").sample(sorted(files), count))
