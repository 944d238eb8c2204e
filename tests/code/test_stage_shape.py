"""One stage shape: every stage's command line comes from sbir.stage (``--params``, ``--profile``, offline
settings, logging), a user's mistake is one line and its kind's exit code, a bug keeps its traceback."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from helpers import REPO_ROOT, write_params

import stages
from sbir.config import ConfigError
from sbir.errors import DataError, ModelError, SbirError
from sbir.stage import run_stage, stage_parser

STAGE_MODULES = sorted(info.name for info in pkgutil.iter_modules(stages.__path__)
                       if "def main(" in (REPO_ROOT / "stages" / f"{info.name}.py").read_text())


def test_every_stage_with_a_command_line_is_found() -> None:
    assert {"prepare", "validate", "restyle", "pretrain_clip", "train", "embed", "evaluate", "register", "index",
            "package", "report"} <= set(STAGE_MODULES)


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_every_stage_main_uses_the_shared_helper(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"stages.{name}")
    source = (REPO_ROOT / "stages" / f"{name}.py").read_text()
    main = source[source.index("def main("):]
    assert "stage_parser(" in main and "run_stage(" in main, f"stages/{name}.py main() bypasses sbir.stage"
    assert "except" not in main and "argparse.ArgumentParser(" not in source
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "--params" in usage and "--profile" in usage


@pytest.mark.parametrize(("error", "code"), [(ConfigError("train.epochs: -3 is not allowed"), 2),
                                             (DataError("manifest.parquet: column 'split' missing"), 1),
                                             (ModelError("artifacts/checkpoints/x: not a model folder"), 2),
                                             (FileNotFoundError("data/raw/Sketchy: no such folder"), 1)])
def test_user_errors_are_one_line_and_their_kinds_exit_code(error: Exception, code: int, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    params = write_params(tmp_path / "params.yaml")

    def work(args, loaded):
        raise error

    assert run_stage("demo", stage_parser("demo"), work, ["--params", str(params)]) == code
    err = capsys.readouterr().err
    assert f"demo failed" in err and str(error) in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml")

    def work(args, loaded):
        return {"a": 1}["b"]  # a programming error, not the user's

    with pytest.raises(KeyError):
        run_stage("demo", stage_parser("demo"), work, ["--params", str(params)])
    assert not issubclass(KeyError, SbirError)


def test_a_profile_is_laid_over_the_params_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = write_params(tmp_path / "params.yaml")
    (tmp_path / "profile.yaml").write_text("evaluate: {dataset: sketchy25}\n")
    code = run_stage("demo", stage_parser("demo"), lambda args, p: {"dataset": p.value("evaluate.dataset", str)},
                     ["--params", str(params), "--profile", str(tmp_path / "profile.yaml")])
    assert code == 0 and capsys.readouterr().out == "demo: dataset sketchy25\n"


def test_a_stage_result_is_one_readable_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = {"model": "dsn", "steps": 31, "seconds": 4.123456, "completed": True, "styles": ["thin", "faint"],
              "train": {"categories": 69, "photo": 126}, "device": None}
    code = run_stage("train", stage_parser("train"), lambda args, p: result,
                     ["--params", str(write_params(tmp_path / "params.yaml"))])
    assert code == 0 and capsys.readouterr().out == (
        "train: model dsn, steps 31, seconds 4.123, completed true, styles [thin, faint], "
        "train (categories 69, photo 126), device null\n")


def test_nonsense_params_refuse_before_any_output_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``epochs: -3`` once trained zero steps, reported completed and overwrote the trained checkpoint."""
    from stages.train import main

    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "artifacts/checkpoints/dsn"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"trained weights")
    write_params(tmp_path / "params.yaml", {"dsn": {"train": {"epochs": -3}}})
    assert main(["--model", "dsn", "--no-progress"]) == 2
    assert "dsn.train.epochs: -3 is not allowed; expected a value > 0" in capsys.readouterr().err
    assert (checkpoint / "model.safetensors").read_bytes() == b"trained weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "params.yaml"]
