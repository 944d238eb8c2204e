"""Lineage from dvc.lock without DVC: what a stage was made from, and whether the workspace still matches it
(a real DVC project of two stages; DVC itself checked against the same verdicts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import commit, run_command

from stages.lineage import LockCheck, committed_in, folder_md5, lineage, read_lock


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """make (reads src/ and params `make.size`) → out.txt; use (reads out.txt) → folder result/."""
    run_command(["git", "init", "-q"], tmp_path)
    run_command(["dvc", "init", "-q"], tmp_path)
    (tmp_path / "src/deep").mkdir(parents=True)
    (tmp_path / "src/a.py").write_text("print('a')\n")
    (tmp_path / "src/deep/b.txt").write_text("b\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"make": {"size": 3, "nested": {"rate": 0.5}}}))
    stages = {"make": {"cmd": "cat src/a.py src/deep/b.txt > out.txt", "deps": ["src"],
                       "params": ["make.size", "make.nested"], "outs": ["out.txt"]},
              "use": {"cmd": "mkdir -p result && cp out.txt result/copy.txt", "deps": ["out.txt"],
                      "outs": ["result"]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    run_command(["dvc", "repro", "-q"], tmp_path)
    commit(tmp_path, "pipeline")
    return tmp_path


def test_folders_hash_as_dvc_hashes_them(project: Path) -> None:
    stages = read_lock(project)
    recorded = {entry["path"]: entry["md5"] for entry in stages["make"]["deps"] + stages["use"]["outs"]}
    assert folder_md5(project / "src", project) == recorded["src"]
    assert folder_md5(project / "result", project) == recorded["result"]


def test_a_fresh_pipeline_is_not_stale_and_each_change_names_itself(project: Path) -> None:
    assert LockCheck(read_lock(project), project).stale_reasons("use", ("use",)) == []
    (project / "src/deep/b.txt").write_text("changed\n")  # inside a folder dependency
    assert LockCheck(read_lock(project), project).stale_reasons("use") == ["make: src changed since it ran"]
    (project / "src/deep/b.txt").write_text("b\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["make"]["nested"]["rate"] = 0.25
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert LockCheck(read_lock(project), project).stale_reasons("use") == [
        "make: parameter make.nested.rate changed since it ran"]
    params["make"]["nested"]["rate"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "result/copy.txt").write_text("not what use made\n")
    assert LockCheck(read_lock(project), project).stale_reasons("use", ("use",)) == [
        "use: result on disk is not the output dvc.lock records"]
    assert "never ran" in LockCheck(read_lock(project), project).stale_reasons("unknown")[0]
    status = run_command(["dvc", "status", "--json"], project).stdout  # DVC agrees: only the output changed
    assert yaml.safe_load(status) == {"use": [{"changed outs": {"result": "modified"}}]}


def test_a_changed_definition_in_dvc_yaml_is_stale(project: Path) -> None:
    document = yaml.safe_load((project / "dvc.yaml").read_text())
    document["stages"]["make"]["cmd"] += " && true"
    document["stages"]["use"]["deps"].append("params.yaml")
    (project / "dvc.yaml").write_text(yaml.safe_dump(document))
    assert LockCheck(read_lock(project), project).stale_reasons("use") == [
        "make: its command in dvc.yaml changed since it ran", "use: its dependencies in dvc.yaml changed since it ran"]


def test_entries_dvc_yaml_no_longer_has_are_ignored(project: Path) -> None:
    """dvc.lock keeps the entries of stages removed from dvc.yaml (a clone's committed lock can hold an old
    pipeline's): they are nobody's upstream, whatever paths they name."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    lock["stages"]["old_train"] = {"cmd": "python old.py", "deps": [{"path": "gone.py", "md5": "0" * 32}],
                                   "outs": [{"path": "out.txt", "md5": "1" * 32}]}
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    check = LockCheck(read_lock(project), project)
    assert "old_train" not in check.stages and check.stale_reasons("use", ("use",)) == []


def test_an_output_made_again_since_makes_its_users_stale(project: Path) -> None:
    (project / "src/a.py").write_text("print('a, again')\n")
    run_command(["dvc", "repro", "-q", "--single-item", "make"], project)  # `use` is not run again
    assert LockCheck(read_lock(project), project).stale_reasons("use") == [
        "use: out.txt was made again since it ran"]


def test_lineage_names_the_commit_that_recorded_the_stage(project: Path) -> None:
    first = run_command(["git", "rev-parse", "HEAD"], project).stdout.strip()
    (project / "notes.txt").write_text("a later commit that leaves dvc.lock alone\n")
    commit(project, "notes")
    stages = read_lock(project)
    assert committed_in("make", stages, project) == first
    record = lineage("make", stages, project)
    assert record["deps"] == {"src": stages["make"]["deps"][0]["md5"]} and record["committed_in"] == first
    assert record["params"] == {"params.yaml": {"make.size": 3, "make.nested": {"rate": 0.5}}}
    (project / "src/a.py").write_text("print('a, again')\n")
    run_command(["dvc", "repro", "-q"], project)  # the new record is not committed yet
    assert committed_in("make", read_lock(project), project) is None
    commit(project, "again")
    assert committed_in("make", read_lock(project), project) == run_command(["git", "rev-parse", "HEAD"],
                                                                          project).stdout.strip()
