"""The one registry of methods and baselines (models/registry.py): modules found by reading the package's sources,
imported only when one of their names is asked for; clear errors for unknown names and bad registrations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, TOY_METHOD, TOY_PARAMS

from models import registry
from models.method import Method
from models.registry import available, create_model, kind_of, lookup, register_baseline, register_method, scan


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_scan_reads_declarations_at_any_depth_without_importing(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", '@register_method("toy")\nclass Toy: ...\n')
    _write(tmp_path, "sub/__init__.py", "@register_baseline('in_init')\ndef f(): ...\n")
    _write(tmp_path, "sub/b.py", 'import not_installed_anywhere\n@register_baseline( "b1" )\ndef f(): ...\n')
    _write(tmp_path, "c.py", '"""Docs:\n    @register_method("example")\n"""\n')  # not at a line's start
    _write(tmp_path, "d.py", "raise RuntimeError('never imported')\n")
    assert scan(tmp_path, "pkg") == {"toy": ("method", "pkg.a"), "in_init": ("baseline", "pkg.sub"),
                                     "b1": ("baseline", "pkg.sub.b")}


def test_scan_refuses_names_it_cannot_read_or_that_two_modules_claim(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", "NAME = 'toy'\n@register_method(NAME)\nclass Toy: ...\n")
    with pytest.raises(ValueError, match=r"a.py: register under a literal name"):
        scan(tmp_path, "pkg")
    _write(tmp_path, "a.py", '@register_method("toy")\nclass Toy: ...\n')
    _write(tmp_path, "b.py", '@register_baseline("toy")\ndef toy(): ...\n')
    with pytest.raises(ValueError, match="'toy' is registered by two modules: pkg.a and pkg.b"):
        scan(tmp_path, "pkg")


def test_the_built_in_models_are_found_with_their_kinds() -> None:
    assert available("method") == ["clip_prompt", "dsn", "zse"]
    assert available("baseline") == ["baseline_hog", "baseline_imagenet", "baseline_random"]
    assert available() == sorted(available("method") + available("baseline"))
    assert kind_of("zse") == "method" and kind_of("baseline_hog") == "baseline"
    assert issubclass(lookup("dsn", "method"), Method) and lookup("dsn").name == "dsn"


def test_unknown_names_and_wrong_kinds_are_clear_errors() -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'; available methods: clip_prompt, dsn, zse; baselines: "
                                       "baseline_hog"):
        kind_of("nope")
    with pytest.raises(KeyError, match="unknown method 'nope'; available methods: clip_prompt, dsn, zse"):
        create_model("nope", kind="method")
    with pytest.raises(KeyError, match="'baseline_hog' is a baseline, not a method; methods: clip_prompt, dsn"):
        create_model("baseline_hog", kind="method")


def test_bad_registrations_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # the session's table stays as it was
    with pytest.raises(TypeError, match="decorates a Method subclass"):
        register_method("odd")(lambda: None)
    with pytest.raises(ValueError, match="registers as 'other'"):
        register_method("other")(type("Named", (lookup("dsn"),), {"name": "named"}))
    with pytest.raises(ValueError, match="baseline 'baseline_hog' is registered twice"):
        register_baseline("baseline_hog")(lambda: None)
    factory = register_baseline("constant")(lambda: None)
    assert register_baseline("constant")(factory) is factory and kind_of("constant") == "baseline"


def test_a_new_module_is_found_with_nothing_else_edited(tmp_path: Path) -> None:
    """A copy of the models package plus models/toy.py: the toy is available and built from its params, and
    asking for it imports no other model's module."""
    shutil.copytree(REPO_ROOT / "models", tmp_path / "models", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "models/toy.py").write_text(TOY_METHOD)
    code = ("import json, sys\nfrom models.registry import available, create_model\n"
            f"method = create_model('toy', {{**{TOY_PARAMS['model']!r}, 'width': 8}}, kind='method')\n"
            "print(json.dumps({'methods': available('method'), 'width': method.config.width, 'name': method.name,"
            " 'imported': sorted(m for m in sys.modules if m in ('models.dsn', 'models.zse', 'models.baselines',"
            " 'models.clip.prompt', 'models.toy'))}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"methods": ["clip_prompt", "dsn", "toy", "zse"], "width": 8, "name": "toy",
                      "imported": ["models.toy"]}
