"""What a model was made from, read from ``dvc.lock``, and whether what is on disk still matches it.

DVC records, for every stage it ran, its command, the hash of each dependency and output and the parameters it
read. A stage's record stays true while dvc.yaml defines the stage as recorded, its file and folder dependencies
hash the same, the dependencies other stages make are the outputs those stages last recorded and its parameters
keep their values — and the same holds for every stage upstream of it; for the stages a caller names, the outputs
on disk must also be the recorded ones. ``LockCheck`` checks exactly that without DVC's own checks, which insist
on holding the repository's lock (``register`` runs inside `dvc repro`, which holds it): dvc.yaml is read through
DVC's library (no lock needed), files and folders are hashed as DVC 3 hashes them (``file_md5``, ``folder_md5``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

LOCK_FILE = "dvc.lock"
PARAMS_FILE = "params.yaml"
DIR_SUFFIX = ".dir"


def read_lock(root: Path = Path(".")) -> dict[str, dict[str, Any]] | None:
    """The stages of ``dvc.lock`` by name (``train@dsn``); None where the project has no lock (not run by DVC)."""
    path = root / LOCK_FILE
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {})


def _feeds(out: str, dep: str) -> bool:
    """An output that is, holds or lies inside a dependency."""
    return out == dep or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")


def upstream(stages: dict[str, dict[str, Any]]) -> dict[str, frozenset[str]]:
    """Each stage's ancestors: a stage feeds another when one of its outputs is (or holds, or lies in) one of the
    other's dependencies."""
    outs = {name: [entry["path"] for entry in stage.get("outs", [])] for name, stage in stages.items()}
    parents = {name: {other for other, paths in outs.items() if other != name and any(
        _feeds(out, entry["path"]) for out in paths for entry in stage.get("deps", []))}
        for name, stage in stages.items()}
    found: dict[str, frozenset[str]] = {}

    def walk(name: str, seen: frozenset[str]) -> frozenset[str]:
        if name not in found:
            ancestors = set(parents[name])
            for parent in parents[name] - seen:
                ancestors |= walk(parent, seen | {name})
            found[name] = frozenset(ancestors)
        return found[name]

    for name in stages:
        walk(name, frozenset())
    return found


def file_md5(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def folder_md5(folder: Path, root: Path = Path(".")) -> str:
    """DVC 3's hash of a folder: MD5 of the JSON list of its files' MD5s and relative paths (sorted), ``.dir``
    appended; files that the project's ``.dvcignore`` names are left out, as DVC leaves them out."""
    ignored = _dvcignore(root)
    entries = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not (ignored and ignored.match_file(path.relative_to(root).as_posix())):
            entries.append({"md5": file_md5(path), "relpath": relative})
    listing = json.dumps(sorted(entries, key=lambda entry: entry["relpath"]), sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + DIR_SUFFIX


def _dvcignore(root: Path) -> Any:
    path = root / ".dvcignore"
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")] \
        if path.is_file() else []
    if not lines:
        return None
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def _entry_differs(entry: dict[str, Any], root: Path) -> bool | None:
    """Whether a recorded file or folder differs from the workspace (None: nothing recorded to compare)."""
    path, recorded = root / entry["path"], str(entry.get("md5", ""))
    if not recorded:
        return None
    if recorded.endswith(DIR_SUFFIX):
        return not path.is_dir() or folder_md5(path, root) != recorded
    return not path.is_file() or file_md5(path) != recorded


def _param(params: dict[str, Any], key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "<missing>"
        value = value[part]
    return value


def _dependency_reasons(name: str, stages: dict[str, dict[str, Any]], params: dict[str, Any],
                        root: Path) -> list[str]:
    stage = stages[name]
    made_by = {entry["path"]: entry for other in stages.values() for entry in other.get("outs", [])}
    reasons = []
    for entry in stage.get("deps", []):
        producer = made_by.get(entry["path"])
        if producer is not None:  # made by a stage: compare with what that stage last recorded
            if producer.get("md5") != entry.get("md5"):
                reasons.append(f"{name}: {entry['path']} was made again since it ran")
        elif _entry_differs(entry, root):
            reasons.append(f"{name}: {entry['path']} changed since it ran")
    for file, values in stage.get("params", {}).items():
        current = params if file == PARAMS_FILE else yaml.safe_load((root / file).read_text()) or {}
        for key, value in _flatten(values):
            if _param(current, key) != value:
                reasons.append(f"{name}: parameter {key} changed since it ran")
    return reasons


def _definition_reasons(name: str, stage: dict[str, Any], defined: Any) -> list[str]:
    """Where dvc.yaml (``defined``: the stage as DVC renders it, foreach and templating applied) now defines
    ``name`` otherwise than dvc.lock recorded it: its command, its dependencies, its parameters or its outputs."""
    from dvc.dependency.param import ParamsDependency

    reasons = []
    if defined.cmd != stage.get("cmd"):
        reasons.append(f"{name}: its command in dvc.yaml changed since it ran")
    files = {dep.def_path for dep in defined.deps if not isinstance(dep, ParamsDependency)}  # params: below
    for kind, now, then in (("dependencies", files, stage.get("deps", [])),
                            ("outputs", {out.def_path for out in defined.outs}, stage.get("outs", []))):
        if now != {entry["path"] for entry in then}:
            reasons.append(f"{name}: its {kind} in dvc.yaml changed since it ran")
    declared = {(param.def_path, key) for param in defined.params for key in param.params}
    recorded = {(file, key) for file, values in stage.get("params", {}).items() for key in values}
    if declared != recorded:
        reasons.append(f"{name}: its parameters in dvc.yaml changed since it ran")
    return reasons


def _output_reasons(name: str, stages: dict[str, dict[str, Any]], root: Path) -> list[str]:
    return [f"{name}: {entry['path']} on disk is not the output dvc.lock records"
            for entry in stages[name].get("outs", []) if _entry_differs(entry, root)]


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Leaf keys of a recorded params block (``dsn.train.seed``), so one changed value names itself."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class LockCheck:
    """Staleness of stages against one reading of dvc.lock and params.yaml; each stage is checked once, however
    many targets share it upstream."""

    def __init__(self, stages: dict[str, dict[str, Any]], root: Path = Path(".")) -> None:
        from dvc.repo import Repo

        self.root = root
        # dvc.yaml as DVC renders it (reading takes no lock: `register` runs while `dvc repro` holds it). dvc.lock
        # keeps the entries of stages dvc.yaml no longer has (DVC does not prune them): they are not part of the
        # pipeline, and nobody's upstream
        self.defined = {stage.name: stage for stage in Repo(str(root.resolve())).index.stages}
        self.stages = {name: stage for name, stage in stages.items() if name in self.defined}
        params_path = root / PARAMS_FILE
        self.params = (yaml.safe_load(params_path.read_text()) or {}) if params_path.is_file() else {}
        self.upstream = upstream(self.stages)
        self._dependencies: dict[str, list[str]] = {}

    def stale_reasons(self, target: str, outputs_of: Iterable[str] = ()) -> list[str]:
        """Why ``target``'s record (or that of a stage upstream of it) no longer describes the workspace, and
        whether the outputs of the stages ``outputs_of`` on disk are not the recorded ones; empty when all hold."""
        if target not in self.stages:
            return [f"{target} is not in {LOCK_FILE}: it never ran through the pipeline"]
        reasons = []
        for name in sorted(self.upstream[target] | {target}):
            if name not in self._dependencies:
                self._dependencies[name] = (_definition_reasons(name, self.stages[name], self.defined[name])
                                            + _dependency_reasons(name, self.stages, self.params, self.root))
            reasons += self._dependencies[name]
        for name in outputs_of:
            reasons += (_output_reasons(name, self.stages, self.root) if name in self.stages
                        else [f"{name} is not in {LOCK_FILE}: it never ran through the pipeline"])
        return reasons


def committed_in(target: str, stages: dict[str, dict[str, Any]], root: Path = Path("."),
                 history: int = 200) -> str | None:
    """The commit that first recorded ``target``'s current dvc.lock entry (the entry unchanged from there to
    HEAD); None when that entry is not committed (or outside git)."""
    current = stages.get(target)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        revisions = git("log", f"-{history}", "--format=%H", "--", LOCK_FILE).split()
        found = None
        for revision in revisions:
            entry = (yaml.safe_load(git("show", f"{revision}:{LOCK_FILE}")) or {}).get("stages", {}).get(target)
            if entry != current:
                break
            found = revision
        return found
    except (OSError, subprocess.CalledProcessError):
        return None


def lineage(train_stage: str, stages: dict[str, dict[str, Any]], root: Path = Path(".")) -> dict[str, Any]:
    """What a trained model came from: its train stage's dependency hashes and parameters as dvc.lock records
    them, and the commit that recorded them."""
    stage = stages.get(train_stage, {})
    return {"train_stage": train_stage,
            "deps": {entry["path"]: entry.get("md5") for entry in stage.get("deps", [])},
            "params": stage.get("params", {}),
            "committed_in": committed_in(train_stage, stages, root)}
