"""The ``zssbir`` console script: help on every command, and the registry commands on a temporary store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from flows.cli import _parser, main
from stages.model_store import Registry

PROTOCOL = "zero_shot/map_all/sklearn/query"


def test_every_command_has_help() -> None:
    commands = _parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"run", "flow", "train", "evaluate", "register", "champion", "rollback", "promote",
                             "scheduler", "serve", "push-champion", "pull-champion", "reproduce"}
    script = Path(sys.executable).with_name("zssbir")
    for name in [None, *commands]:
        result = subprocess.run([str(script), *([name] if name else []), "--help"], capture_output=True, text=True,
                                cwd=REPO_ROOT, timeout=60)
        assert result.returncode == 0 and "usage: zssbir" in result.stdout, (name, result.stderr)


def _folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": name}))
    return folder


def test_champion_promote_and_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO_ROOT)  # params.yaml gives the default dataset and protocol
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "store"))
    registry = Registry(tmp_path / "store")
    assert main(["champion"]) == 1 and "no champion" in capsys.readouterr().out
    versions = [registry.register(_folder(tmp_path, name), method=name, dataset="openmoji_zs", protocol=PROTOCOL,
                                  score=score, metrics={}, params={}, git="g").version
                for name, score in (("first", 0.3), ("second", 0.6))]
    assert main(["champion"]) == 0
    shown = capsys.readouterr().out
    assert f"second {versions[1]}" in shown and "promoted" in shown and versions[0] in shown
    assert main(["rollback", "--no-rebuild"]) == 0 and registry.champion("openmoji_zs", PROTOCOL)["version"] == versions[0]
    assert main(["rollback", "--no-rebuild"]) == 2 and "no earlier champion" in capsys.readouterr().err
    assert main(["promote", versions[1][:8], "--no-rebuild"]) == 0
    assert main(["champion", "--json"]) == 0
    shown = capsys.readouterr().out
    document = json.loads(shown[shown.index("\n{") + 1:])
    assert document["champion"]["version"] == versions[1]
    assert [e["event"] for e in document["history"]] == ["promoted", "promoted", "rollback", "promoted"]


def test_make_run_reproduces_only_the_models_of_run_models(tmp_path: Path) -> None:
    """The quick path evaluates params.yaml's run.models (DVC runs what they need) and then register, index and
    package on their own, so the other models of dvc.yaml are not pulled in; unknown names are refused."""
    from flows.cli import quick_targets

    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((REPO_ROOT / name).read_text())
    chosen = yaml.safe_load((tmp_path / "params.yaml").read_text())["run"]["models"]
    calls = quick_targets(tmp_path)
    assert calls[0] == ["repro", *[f"evaluate@{model}" for model in chosen]]
    assert calls[1:] == [["repro", "--single-item", stage] for stage in ("register", "index", "package")]
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["run"]["models"] = ["dsn", "no_such_model"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="no_such_model"):
        quick_targets(tmp_path)
