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


def test_pipeline_status_knows_which_stages_a_repro_would_leave_alone(tmp_path: Path) -> None:
    """a → b → c (through files and a folder) and d on its own; after a change to b's script, one `dvc status`
    tells that a and d are up to date, b changed and c is downstream of it; a stage never run makes it unusable."""
    run_command(["git", "init", "-q"], tmp_path)
    run_command(["dvc", "init", "-q"], tmp_path)
    for name in "abcd":
        (tmp_path / f"{name}.sh").write_text("echo 1\n")
    stages = {"a": {"cmd": "mkdir -p out && sh a.sh > out/a.txt", "deps": ["a.sh"], "outs": ["out/a.txt"]},
              "b": {"cmd": "mkdir -p folder && sh b.sh > folder/b.txt", "deps": ["b.sh", "out/a.txt"],
                    "outs": ["folder"]},
              "c": {"cmd": "sh c.sh > c.txt", "deps": ["c.sh", "folder/b.txt"], "outs": ["c.txt"]},
              "d": {"cmd": "sh d.sh > d.txt", "deps": ["d.sh"], "outs": ["d.txt"]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    run_command(["dvc", "repro", "-q"], tmp_path)
    fresh = dvc.pipeline_status(tmp_path)
    assert fresh is not None and fresh.changed == set() and all(fresh.up_to_date(s, set()) for s in "abcd")
    assert fresh.upstream == {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": set()}

    (tmp_path / "b.sh").write_text("echo 2\n")
    status = dvc.pipeline_status(tmp_path)
    assert status is not None and status.changed == {"b"}
    assert [s for s in "abcd" if status.up_to_date(s, set())] == ["a", "d"]
    assert not status.up_to_date("c", {"b"}) and not status.up_to_date("unknown", set())
    assert not fresh.up_to_date("c", {"a"})  # something upstream ran since the status was taken

    stages["e"] = {"cmd": "echo e > e.txt", "outs": ["e.txt"]}  # never run: not in dvc.lock
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    assert dvc.pipeline_status(tmp_path) is None


def test_the_cli_shows_dvc_repro_without_its_hints(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`make run`'s view of `dvc repro`: stages and their own lines, no git/autostage hints, no lock-file notices,
    no runs of blank lines (DVC itself prints them all: the same run unfiltered is checked too)."""
    from sbir.processes import run_child

    run_command(["git", "init", "-q"], tmp_path)
    run_command(["dvc", "init", "-q"], tmp_path)
    stages = {name: {"cmd": f"echo result of {name} > {name}.txt && echo {name} says hello", "outs": [f"{name}.txt"]}
              for name in ("first", "second")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    dvc_binary = str(Path(run_command(["which", "dvc"], tmp_path).stdout.strip()))
    assert run_child([dvc_binary, "repro", "--single-item", "first"], cwd=tmp_path) == 0
    raw = capfd.readouterr().out
    assert "git add" in raw and ("Updating lock file" in raw or "Generating lock file" in raw)
    assert run_child([dvc_binary, "repro", "second"], keep_line=dvc.QuietOutput(), cwd=tmp_path) == 0
    shown = capfd.readouterr().out
    assert "Running stage 'second'" in shown and "second says hello" in shown
    for noise in ("git add", "autostage", "lock file", "\n\n\n"):
        assert noise not in shown, (noise, shown)


def test_a_torchrun_training_counts_as_a_run_of_the_train_stage(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc commit` of torchrun's outputs prints no "Running stage"; the record must still say train@<model> ran,
    or the flow's status would skip embed and evaluate over the new checkpoint."""
    import subprocess

    from flows.training import train_distributed

    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: SimpleNamespace(returncode=0))
    monkeypatch.setattr(dvc, "run_dvc", lambda args, target, repo, log_dir: dvc.StageRun(
        target, ["dvc", *args], 0.1, log_dir / "commit.log", ran=False))
    record = train_distributed.fn("dsn", tmp_path, tmp_path / "logs", 2)
    assert record["target"] == "train@dsn" and record["ran"] is True
    status = dvc.PipelineStatus(frozenset(), {"train@dsn": frozenset(), "embed@dsn": frozenset({"train@dsn"})})
    assert not status.up_to_date("embed@dsn", {record["target"]} if record["ran"] else set())
