"""The training flow under Prefect's test harness, running the real DVC stages of a sized-down project.

The module's project is a copy of the session's reproduced one, as a fresh machine has it (an empty model
store), after a commit that re-seeds the method the reproduction made champion: the flow re-trains that method,
evaluates, registers the best into the store and packages it, and finds every other stage up to date. The
challenger test works on its own copy of that project; the validation test restores what it changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import commit, copy_project, run_command

from flows.training import ValidationFailed, training_flow
from sbir.manifest import read_manifest
from stages.model_store import Registry

pytestmark = pytest.mark.slow
PROTOCOL = "zero_shot/map_all/sklearn/query"
METHODS = ("dsn", "clip_prompt", "zse")
MODELS = (*METHODS, "baseline_random", "baseline_imagenet", "baseline_hog")


def _artifact(key: str) -> str:
    from prefect.artifacts import Artifact

    found = Artifact.get(key)
    assert found is not None, f"no artifact {key!r}"
    return found.data


def _task_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(run.name for run in runs)


def _reseeded(reproduced_project: Path) -> str:
    """The method the session's reproduction made champion, which the module's commit re-seeds."""
    return json.loads((reproduced_project / "artifacts/register/openmoji_zs.json").read_text())["decision"]["method"]


@pytest.fixture(scope="module")
def flow_project(reproduced_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(reproduced_project, tmp_path_factory.mktemp("flow") / "project", without=(".bentoml",))
    method = _reseeded(reproduced_project)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[method]["train"]["seed"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, f"re-seed {method}")
    return root


@pytest.fixture(scope="module")
def first_run(flow_project: Path, prefect_harness: None) -> dict:
    result = training_flow(repo=str(flow_project))
    commit(flow_project, "first flow run")
    return result


def test_full_flow_trains_evaluates_registers_and_reports(first_run: dict, flow_project: Path,
                                                          reproduced_project: Path) -> None:
    targets = [stage["target"] for stage in first_run["stages"]]
    assert targets[:2] == ["validate@openmoji_zs", "restyle@openmoji_zs"]
    assert targets[-3:] == ["register", "index", "package"]
    for model in MODELS:  # the flow trains and compares every model of dvc.yaml, all three methods included
        assert targets.index(f"train@{model}") < targets.index(f"embed@{model}") < targets.index(f"evaluate@{model}")
    # it ran what the commit changed, through to a new Bento, and found every other stage up to date
    method = _reseeded(reproduced_project)
    ran = {stage["target"] for stage in first_run["stages"] if stage["ran"]}
    assert ran == {f"train@{method}", f"embed@{method}", f"evaluate@{method}", "register", "index", "package"}
    # the best trained method becomes champion (baselines are compared, not registered) and is what the Bento serves
    scores = {m: json.loads((flow_project / f"artifacts/eval/openmoji_zs/{m}/metrics.json").read_text())
              ["zero_shot"]["map_all/sklearn/query"] for m in METHODS}
    champion = Registry(flow_project / ".bentoml").champion("openmoji_zs", PROTOCOL)
    assert champion is not None and champion["method"] == max(scores, key=scores.get)
    bento = json.loads((flow_project / "artifacts/serving/bento.json").read_text())
    assert bento["method"] == champion["method"] and bento["tag"].startswith("zssbir:")
    report = _artifact("training-report-openmoji-zs")
    for needle in ("| model |", "baseline_hog", "promoted to champion", "no champion yet", "params.yaml",
                   "grid.png", "| train@dsn |"):
        assert needle in report, f"report lacks {needle!r}:\n{report}"
    table = json.loads(_artifact("metrics-openmoji-zs"))
    assert {row["model"] for row in table} == set(MODELS)
    assert "Data and pipelines are up to date" in run_command(["dvc", "status"], flow_project).stdout


def test_a_challenger_that_does_not_beat_the_margin_is_not_promoted(first_run: dict, flow_project: Path,
                                                                    tmp_path: Path) -> None:
    project = copy_project(flow_project, tmp_path / "project")  # the first run's project, champion included
    registry = Registry(project / ".bentoml")
    method = registry.champion("openmoji_zs", PROTOCOL)["method"]
    champion = registry.champion("openmoji_zs", PROTOCOL)["version"]
    seed = yaml.safe_load((project / "params.yaml").read_text())[method]["train"]["seed"]
    assert seed != 7
    result = training_flow(repo=str(project), models=[method], package=False,
                           set_params=[f"{method}.train.seed=7", "register.margin=1.0"])
    assert f"dvc exp run -S {method}.train.seed=7 -S register.margin=1.0" in result["report"]
    assert f"| {method}.train.seed | {seed} | 7 |" in result["report"]  # the run lists what it changed
    assert "registered, not promoted" in result["report"]
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == champion
    assert len(registry.ledger()["registrations"]) == 2
    assert registry.ledger()["history"][-1]["event"] == "not_promoted"


def test_failing_validation_stops_the_flow_before_training(first_run: dict, flow_project: Path) -> None:
    manifest = read_manifest(flow_project / "data/prepared/openmoji_zs")
    victim = manifest.frame["path"].iloc[3]
    target = manifest.resolve(victim)
    target.unlink()  # DVC links cache files into the workspace: replace, never edit in place
    target.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run_command(["dvc", "commit", "--force", "prepare@openmoji_zs"], flow_project)  # the versioned data is bad
    try:
        state = training_flow(repo=str(flow_project), return_state=True)
        assert state.is_failed()
        with pytest.raises(ValidationFailed, match="training did not start"):
            state.result()
        assert _task_names(state.state_details.flow_run_id) == ["validate@openmoji_zs"]
        report = _artifact("validation-failure")
        assert "Validation failed on `openmoji_zs`" in report and victim in report
    finally:
        target.unlink()
        run_command(["git", "checkout", "--", "dvc.lock"], flow_project)
        run_command(["dvc", "checkout", "--force", "data/prepared/openmoji_zs"], flow_project)
        run_command(["dvc", "repro", "--single-item", "validate@openmoji_zs"], flow_project)
