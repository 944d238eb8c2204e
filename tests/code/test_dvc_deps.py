"""Every DVC stage declares the project code it runs: for each stage of dvc.yaml (``foreach`` expanded by DVC
itself), the module its ``cmd`` runs (``python -m stages.X``) is followed through its imports, transitively
inside the project (``ast``: module-level and function-level imports, ``from pkg import submodule``, relative
imports, and the package ``__init__`` files an import executes), and every project file reached must be
covered by a ``deps`` entry (the file itself or a folder above it). Otherwise editing that file would not
re-run the stage and ``dvc.lock`` would record outputs of code it never saw.

A method's own module is imported through the registry at runtime (``importlib``), so it is not reachable
statically; dvc.yaml's ``${item.code}`` / ``${item.needs}`` deps are what cover it, and the project code a
stage declares is followed too (what a method module imports must be covered as well). Nothing here lists
files: the stages, commands, deps and imports are all read from dvc.yaml and the source.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

# Top-level packages of the project (folders holding an __init__.py).
PACKAGES = frozenset(p.parent.name for p in REPO_ROOT.glob("*/__init__.py"))


@cache
def dvc_stages() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(address, cmd, deps relative to the repository root) of every stage, ``foreach`` and ``vars`` resolved by
    DVC's own loader (offline, reads dvc.yaml and params.yaml only)."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        stages = []
        for stage in repo.index.stages:
            wdir = Path(stage.wdir).resolve()
            deps = tuple(sorted((wdir / str(dep.def_path)).resolve().relative_to(REPO_ROOT).as_posix()
                                for dep in stage.deps))
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd or [])
            stages.append((stage.addressing, cmd, deps))
    return tuple(stages)


def entry_module(cmd: str) -> str | None:
    """The project module a stage command runs: ``python -m pkg.mod ...`` or ``python pkg/mod.py ...``."""
    words = shlex.split(cmd)
    for index, word in enumerate(words[:-1]):
        if Path(word).name.startswith("python"):
            following = words[index + 1:]
            if following[0] == "-m" and len(following) > 1:
                return following[1]
            if following[0].endswith(".py"):
                return ".".join(Path(following[0]).with_suffix("").parts)
    return None


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (a module, or a package's ``__init__.py``), None outside."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_trivial(path: Path) -> bool:
    """A package ``__init__.py`` holding at most a docstring runs no code: it needs no dep of its own."""
    body = ast.parse(path.read_text(), filename=str(path)).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def with_parents(name: str) -> list[str]:
    """Importing ``a.b.c`` executes ``a/__init__``, ``a/b/__init__`` and then ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imports_in(source: str, package: str) -> list[str]:
    """Dotted names ``source`` imports anywhere (functions included); ``package`` anchors relative imports.
    ``from pkg import name`` also yields ``pkg.name`` when that is a project module (the import executes it)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}")]
    return names


@cache
def imported_modules(path: Path) -> tuple[str, ...]:
    """Project modules ``path`` executes on import, with the packages above them."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[str] = []
    for name in imports_in(path.read_text(), package):
        for part in with_parents(name):
            if module_file(part) and part not in found:
                found.append(part)
    return tuple(found)


def import_chains(module: str) -> dict[Path, list[str]]:
    """Every project file ``module`` executes on import, each with the import chain that reaches it."""
    chains: dict[Path, list[str]] = {}
    queue: list[tuple[str, list[str]]] = [(part, [part]) for part in with_parents(module) if module_file(part)]
    while queue:
        name, chain = queue.pop(0)
        path = module_file(name)
        if path is None or path in chains:
            continue
        chains[path] = chain
        queue += [(child, chain + [child]) for child in imported_modules(path) if module_file(child) not in chains]
    return chains


def covered(relative: str, deps: tuple[str, ...]) -> bool:
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def declared_code(deps: tuple[str, ...]) -> list[Path]:
    """The project Python files the deps name (files, or every file of a folder): a method's module is imported
    through the registry at runtime, and dvc.yaml lists it (``${item.code}``); what it imports counts too."""
    files: list[Path] = []
    for dep in deps:
        path = REPO_ROOT / dep
        if dep.split("/")[0] not in PACKAGES:
            continue
        if path.is_file() and path.suffix == ".py":
            files.append(path)
        elif path.is_dir():
            files += sorted(path.rglob("*.py"))
    return files


def missing_deps(cmd: str, deps: tuple[str, ...]) -> dict[str, list[str]]:
    """Project files the command runs that no dep covers: file -> import chain. Followed from the module the
    command runs, and from the project code the deps declare (a method module the registry imports)."""
    chains: dict[Path, list[str]] = {}
    module = entry_module(cmd)
    if module is not None and module_file(module) is not None:
        chains.update(import_chains(module))
    for path in declared_code(deps):
        relative = path.relative_to(REPO_ROOT).as_posix()
        for reached, chain in import_chains(module_name(path)).items():
            chains.setdefault(reached, [f"[dep {relative}]"] + chain)
    missing = {}
    for path, chain in chains.items():
        relative = path.relative_to(REPO_ROOT).as_posix()
        if path.name == "__init__.py" and is_trivial(path):
            continue
        if not covered(relative, deps):
            missing[relative] = chain
    return missing


def model_code() -> set[str]:
    """dvc.yaml's ``models`` entries' ``code`` and ``needs``: the code a stage loads by name (through the registry)."""
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    models = next(entry["models"] for entry in pipeline["vars"] if "models" in entry)
    return {path for entry in models.values() for path in (entry["code"], entry["needs"])}


def stale_deps(cmd: str, deps: tuple[str, ...]) -> list[str]:
    """Project Python files a stage lists as deps but never runs: editing them would re-run it for nothing."""
    roots = model_code()
    module = entry_module(cmd)
    reached = set(import_chains(module)) if module is not None and module_file(module) is not None else set()
    for path in declared_code(tuple(dep for dep in deps if dep in roots)):
        reached |= set(import_chains(module_name(path)))
    return sorted(dep for dep in deps if dep.endswith(".py") and dep.split("/")[0] in PACKAGES
                  and dep not in roots and REPO_ROOT / dep not in reached)


def test_dvc_resolves_the_stages() -> None:
    stages = dvc_stages()
    assert stages, "no stage in dvc.yaml"
    assert any("@" in address for address, _, _ in stages), "foreach was not expanded"
    assert all("${" not in cmd and not any("${" in dep for dep in deps) for _, cmd, deps in stages)
    runnable = [address for address, cmd, _ in stages if entry_module(cmd) and module_file(entry_module(cmd))]
    assert runnable, "no stage runs a project module"


@pytest.mark.parametrize("address", [address for address, _, _ in dvc_stages()])
def test_every_imported_project_file_is_a_dep(address: str) -> None:
    _, cmd, deps = next(stage for stage in dvc_stages() if stage[0] == address)
    missing = missing_deps(cmd, deps)
    report = "\n".join(f"  {path}  (imported via {' -> '.join(chain)})" for path, chain in sorted(missing.items()))
    if missing:
        pytest.fail(f"dvc.yaml stage {address!r} runs project files that no dep covers:\n{report}", pytrace=False)


def test_the_walker_sees_every_kind_of_import() -> None:
    """Function-level, `from pkg import submodule` and relative imports are followed; packages' code counts."""
    chains = import_chains("stages.evaluate")
    # function-level import inside stages/evaluate.py (explanation sheets)
    assert chains[REPO_ROOT / "models/explain.py"][:2] == ["stages.evaluate", "models.explain"]
    # `from sbir.datasets import create` executes sbir/datasets/__init__.py, which imports its submodules
    prepare = import_chains("stages.prepare")
    assert REPO_ROOT / "sbir/datasets/__init__.py" in prepare
    assert any(path.parent == REPO_ROOT / "sbir/datasets" and path.name != "__init__.py" for path in prepare)
    # `from pkg import submodule` and a relative import, inside a function
    imported = imports_in("def f():\n    from sbir import manifest\n    from . import prepare\n", "stages")
    assert {"sbir.manifest", "stages.prepare"} <= set(imported)
    assert entry_module("python -m stages.train --model dsn") == "stages.train"
    assert entry_module("python stages/train.py") == "stages.train"
    assert covered("sbir/datasets/openmoji.py", ("sbir/datasets",))
    assert not covered("sbir/datasets_extra.py", ("sbir/datasets",))


@pytest.mark.parametrize("stage", sorted({address.split("@")[0] for address, _, _ in dvc_stages()}))
def test_no_dep_is_code_the_stage_never_runs(stage: str) -> None:
    """A foreach stage shares one deps list: a file is stale when no instance of the stage runs it."""
    instances = [(cmd, deps) for address, cmd, deps in dvc_stages() if address.split("@")[0] == stage]
    stale = set.intersection(*(set(stale_deps(cmd, deps)) for cmd, deps in instances))
    assert sorted(stale) == [], f"dvc.yaml stage {stage!r} lists code that none of its instances runs"
