"""DESIGN.md's layering, checked on the source: imports point downward only, and the core imports no
pipeline framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO_ROOT

FRAMEWORKS = {"dvc", "dvclive", "prefect", "great_expectations", "bentoml"}
FORBIDDEN = {
    "sbir": {"models", "stages", "flows", "serving"} | FRAMEWORKS,
    "models": {"stages", "flows", "serving"} | FRAMEWORKS,
    "stages": {"flows", "serving", "prefect"},
    "serving": {"stages", "flows", "prefect"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_downward(package: str) -> None:
    offenders = {str(path.relative_to(REPO_ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
                 for path in (REPO_ROOT / package).rglob("*.py")}
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import dvc.api\nfrom models.dsn import DSNNet\nfrom . import sibling\n")
    assert imported_roots(sample) == {"dvc", "models"}
