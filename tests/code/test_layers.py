"""DESIGN.md's layering, checked on the source: imports point downward only, no project modules import each other
in a circle (imports inside functions included), only flows import Prefect, only serving and the register/package
stages import BentoML, the core imports no pipeline framework, and importing a package changes no environment
variable. Also: dvc.yaml deps cover what a stage imports, and only sbir.bundle_layout names the bundle's files."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

FRAMEWORKS = {"dvc", "dvclive", "prefect", "great_expectations", "bentoml"}
FORBIDDEN = {
    "sbir": {"models", "stages", "flows", "serving"} | FRAMEWORKS,
    "models": {"stages", "flows", "serving"} | FRAMEWORKS,
    "stages": {"flows", "serving", "prefect"},
    "serving": {"stages", "flows", "prefect"},
    "flows": {"serving", "bentoml"},
}
BENTOML_STAGES = {"register.py", "model_store.py", "package.py"}  # the only stages that may touch the model store
PROJECT_PACKAGES = ("sbir", "models", "stages", "flows", "serving")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module of the project packages under ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for package in PROJECT_PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (functions included), each resolved to the most
    specific module: ``from a.b import c`` is ``a.b.c`` where that is a module, else ``a.b``."""
    def innermost(dotted: str) -> str | None:
        parts = dotted.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {innermost(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {innermost(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
                      for alias in node.names}
    return {module for module in found if module is not None and module != name}


def import_cycles(root: Path) -> list[list[str]]:
    """Each set of project modules that import one another in a circle (a strongly connected component of the
    import graph with more than one module), sorted."""
    modules = project_modules(root)
    graph = {name: sorted(module_imports(name, path, modules)) for name, path in modules.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in order:
            visit(name)
    return sorted(cycles)


def test_no_import_cycles() -> None:
    assert import_cycles(REPO_ROOT) == []


def test_the_cycle_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "sbir").mkdir()
    (tmp_path / "stages/__init__.py").write_text("")
    (tmp_path / "stages/a.py").write_text("from stages.b import thing\nfrom sbir import paths\n")
    (tmp_path / "stages/b.py").write_text("def thing():\n    from stages import a\n")
    (tmp_path / "stages/c.py").write_text("from . import d\n")
    (tmp_path / "stages/d.py").write_text("import stages.c as c\n")
    (tmp_path / "sbir/paths.py").write_text("import os\n")
    assert import_cycles(tmp_path) == [["stages.a", "stages.b"], ["stages.c", "stages.d"]]
    (tmp_path / "stages/b.py").write_text("def thing():\n    from sbir import paths\n")
    (tmp_path / "stages/d.py").write_text("")
    assert import_cycles(tmp_path) == []


def test_only_the_layout_modules_name_bundle_files() -> None:
    """The serving bundle's file names live in sbir.bundle_layout (stored embeddings have their own meta.json)."""
    names = {"meta.json": {"sbir/bundle_layout.py", "sbir/embeddings.py"}, "index.faiss": {"sbir/bundle_layout.py"},
             "gallery.parquet": {"sbir/bundle_layout.py"}, "thumbs": {"sbir/bundle_layout.py"}}
    found: dict[str, set[str]] = {name: set() for name in names}
    for package in (*PROJECT_PACKAGES, "benchmarks", "tests"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for name in names:
                        if name in node.value:
                            found[name].add(path.relative_to(REPO_ROOT).as_posix())
    assert {name: sorted(where - names[name]) for name, where in found.items()} == {name: [] for name in names}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_downward(package: str) -> None:
    offenders = {str(path.relative_to(REPO_ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
                 for path in (REPO_ROOT / package).rglob("*.py")}
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_only_register_and_package_stages_import_bentoml() -> None:
    users = {path.name for path in (REPO_ROOT / "stages").glob("*.py") if "bentoml" in imported_roots(path)}
    assert users <= BENTOML_STAGES


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import dvc.api\nfrom models.dsn import DSNNet\nfrom . import sibling\n")
    assert imported_roots(sample) == {"dvc", "models"}


def test_importing_the_packages_changes_no_environment() -> None:
    """Entry points apply the offline settings; importing library code must not (DESIGN.md)."""
    modules = ["sbir", "sbir.config", "sbir.index", "sbir.embeddings", "models", "models.engine", "models.dsn",
               "models.baselines", "models.checkpoint", "stages.train", "stages.evaluate", "stages.embed", "flows",
               "serving"]
    code = ("import json, os, sys; before = dict(os.environ)\n"
            f"for name in {modules!r}: __import__(name)\n"
            "after = dict(os.environ)\n"
            "print(json.dumps(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "DO_NOT_TRACK", "DVC_NO_ANALYTICS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
