"""DESIGN.md's layering, checked on the source: imports point downward only, only flows import Prefect, only
serving and the register/package stages import BentoML, the core imports no pipeline framework, and importing
a package changes no environment variable."""

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
