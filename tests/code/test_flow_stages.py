"""How the flow runs DVC stages: failures carry their log tail, only transient ones are retried, plans are
checked against dvc.yaml before anything runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import REPO_ROOT, commit, run_command

from flows import dvc, reporting
from flows.training import _plan, _retry_if_transient


def _failed_state(error: Exception) -> SimpleNamespace:
    return SimpleNamespace(result=lambda raise_on_failure=False: error)


@pytest.mark.parametrize(("returncode", "tail", "transient"), [
    (1, "validate failed: 3 checks", False),
    (2, "params.yaml: dsn.train.lr must be a float", False),
    (-9, "", True),
    (255, "ERROR: failed to reproduce 'train@dsn': failed to run: python -m stages.train, exited with -9", True),
    (255, "ERROR: Unable to acquire lock. Most likely another DVC process is running", True),
    (255, "ERROR: failed to reproduce 'train@dsn': exited with 1", False),
])
def test_only_transient_failures_are_retried(returncode: int, tail: str, transient: bool, tmp_path: Path) -> None:
    error = dvc.StageFailed("train@dsn", returncode, tail, tmp_path / "log")
    assert error.transient is transient
    assert _retry_if_transient(None, None, _failed_state(error)) is transient
    assert _retry_if_transient(None, None, _failed_state(ValueError("bad config"))) is False


def test_a_failed_stage_reports_its_log_tail(tmp_path: Path) -> None:
    run_command(["git", "init", "-q"], tmp_path)
    run_command(["dvc", "init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"broken": {
        "cmd": "python -c \"import sys; print('line one'); print('the real reason'); sys.exit(3)\""}}}))
    commit(tmp_path, "pipeline")
    with pytest.raises(dvc.StageFailed) as caught:
        dvc.repro("broken", tmp_path, tmp_path / "logs")
    error = caught.value
    assert not error.transient and error.returncode != 0
    assert "the real reason" in error.log_tail and error.log_path.is_file()
    report = reporting.stage_failure_markdown("broken", error.returncode, error.log_path, error.log_tail)
    assert "# Stage `broken` failed" in report and "the real reason" in report


def test_plans_are_checked_before_anything_runs() -> None:
    assert dvc.pipeline_models(REPO_ROOT)[0] == "dsn"
    dataset, models, changes = _plan(REPO_ROOT, "other_set", ["dsn"], ["dsn.train.epochs=2"])
    assert (dataset, models) == ("other_set", ["dsn"])
    assert changes == ["dsn.train.epochs=2", "train.dataset=other_set", "evaluate.dataset=other_set"]
    with pytest.raises(ValueError, match="unknown model"):
        _plan(REPO_ROOT, None, ["nope"], None)
    with pytest.raises(ValueError, match="key=value"):
        _plan(REPO_ROOT, None, None, ["dsn.train.epochs"])
