"""The training flow: validate → train each method → embed → evaluate → register → index → package.

Each step runs its DVC stage (``flows.dvc``) one after another in the project checkout; DVC decides what is
up to date. A validation failure stops the flow before training and reports the failed expectations and
offending files; a failed stage reports its log tail; a transient failure (a killed stage, a held lock) is
retried. Every run publishes a Markdown report and a table of metrics as Prefect artifacts.

Parameters are passed on through DVC: ``dataset`` and ``set_params`` (``key=value``) run the first stage as
``dvc exp run -S ...``, which writes them to ``params.yaml``; without them the run uses ``params.yaml`` as it is.
Either way the report says which, and lists every parameter that differs from the last commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import dvc, reporting
from sbir import paths
from sbir.config import Params

STAGE_TIMEOUT_S = 6 * 3600


class ValidationFailed(RuntimeError):
    """The data gate failed: training never starts on data that broke an expectation."""


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    error = state.result(raise_on_failure=False)
    return isinstance(error, dvc.StageFailed) and error.transient


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_retry_if_transient, task_run_name="{target}")
def run_stage(target: str, repo: Path, log_dir: Path, single_item: bool = False,
              set_params: list[str] | None = None, known_up_to_date: bool = False) -> dict[str, Any]:
    """One DVC stage (``dvc repro``, or ``dvc exp run -S`` when parameters change); ``known_up_to_date``: the
    flow's `dvc status` already found nothing to run for it (``dvc.PipelineStatus``), so DVC is not started."""
    if known_up_to_date:
        result = dvc.skipped(target, log_dir)
    elif set_params:
        result = dvc.exp_run(target, set_params, repo, log_dir, STAGE_TIMEOUT_S)
    else:
        result = dvc.repro(target, repo, log_dir, single_item, STAGE_TIMEOUT_S)
    get_run_logger().info("%s: %s in %.1f s", target, "ran" if result.ran else "up to date", result.seconds)
    return result.to_dict()


@task(retries=1, retry_delay_seconds=30, retry_condition_fn=_retry_if_transient, task_run_name="torchrun-{model}")
def train_distributed(model: str, repo: Path, log_dir: Path, nproc_per_node: int) -> dict[str, Any]:
    """``torchrun`` the train stage's command outside DVC, then ``dvc commit`` its outputs into dvc.lock."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    log_path = log_dir / f"train@{model}.torchrun.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        code = subprocess.run([torchrun, f"--nproc-per-node={nproc_per_node}", "-m", "stages.train", "--model", model,
                               "--no-progress"], cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                              env=dvc.stage_environment(repo)).returncode
    if code != 0:
        raise dvc.StageFailed(f"train@{model}", code, dvc.tail(log_path.read_text(errors="replace")), log_path)
    committed = dvc.run_dvc(["commit", "--force", f"train@{model}"], f"commit-train@{model}", repo, log_dir)
    return {**committed.to_dict(), "target": f"train@{model}", "ran": True}  # it trained: what follows must run


def _stage(target: str, repo: Path, log_dir: Path, runs: list[dict[str, Any]],
           status: dvc.PipelineStatus | None = None, **options: Any) -> None:
    """Run a stage (or record it up to date, where ``status`` says so); on failure publish its log tail and stop
    the flow."""
    ran = {run["target"] for run in runs if run["ran"]}
    try:
        runs.append(run_stage(target, repo, log_dir, known_up_to_date=bool(status and status.up_to_date(target, ran)),
                              **options))
    except dvc.StageFailed as error:
        create_markdown_artifact(reporting.stage_failure_markdown(target, error.returncode, error.log_path,
                                                                  error.log_tail),
                                 key="stage-failure", description=f"{target} failed")
        raise


def _validate(dataset: str, repo: Path, log_dir: Path, runs: list[dict[str, Any]], set_params: list[str]) -> None:
    try:
        runs.append(run_stage(f"validate@{dataset}", repo, log_dir, set_params=set_params))
    except dvc.StageFailed as error:
        failures = reporting.validation_failures(repo, dataset)
        create_markdown_artifact(reporting.validation_markdown(dataset, failures, error.log_tail),
                                 key="validation-failure", description=f"data gate failed on {dataset}")
        raise ValidationFailed(f"validation of {dataset} failed ({len(failures)} failed expectation(s)); "
                               f"training did not start. See {paths.validation_report(dataset)}") from error


def _plan(repo: Path, dataset: str | None, models: list[str] | None,
          set_params: list[str] | None) -> tuple[str, list[str], list[str]]:
    """The dataset, the models to run and the parameter changes, checked against dvc.yaml and params.yaml."""
    known = dvc.pipeline_models(repo)
    chosen = list(models) if models else known
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: dvc.yaml's models are {known}")
    changes = list(set_params or [])
    bad = [pair for pair in changes if "=" not in pair]
    if bad:
        raise ValueError(f"set_params entries must be 'key=value', got {bad}")
    current = Params.load(repo / "params.yaml").value("evaluate.dataset", str)
    if dataset and dataset != current:
        changes += [f"train.dataset={dataset}", f"evaluate.dataset={dataset}"]
    return dataset or current, chosen, changes


def _run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    models = parameters.get("models")
    return f"train-{parameters.get('dataset') or 'params'}" + (f"-{'-'.join(models)}" if models else "")


@flow(name="zssbir-training", flow_run_name=_run_name, log_prints=True)
def training_flow(dataset: str | None = None, models: list[str] | None = None, set_params: list[str] | None = None,
                  register_champion: bool = True, package: bool = True, launcher: str = "python",
                  nproc_per_node: int = 1, repo: str | None = None) -> dict[str, Any]:
    """Validate, train, embed, evaluate and register the pipeline's models on one dataset; report the run."""
    if launcher not in ("python", "torchrun"):
        raise ValueError(f"launcher must be 'python' or 'torchrun', got {launcher!r}")
    root = Path(repo or os.environ.get("ZSSBIR_REPO") or ".").absolute()
    logger = get_run_logger()
    dataset, chosen, changes = _plan(root, dataset, models, set_params)
    log_dir = root / "artifacts/flow_logs" / dataset
    source = (f"Changed through `dvc exp run -S {' -S '.join(changes)}` (now in params.yaml)." if changes
              else "`params.yaml` as it is in the checkout.")
    logger.info("dataset %s, models %s; parameters: %s", dataset, chosen, source)
    runs: list[dict[str, Any]] = []
    _validate(dataset, root, log_dir, runs, changes)
    status = None if changes else dvc.pipeline_status(root)  # after the data gate: it may have re-run validate
    _stage(f"restyle@{dataset}", root, log_dir, runs, status)
    for model in chosen:
        if launcher == "torchrun" and nproc_per_node > 1:
            runs.append(train_distributed(model, root, log_dir, nproc_per_node))
        else:
            _stage(f"train@{model}", root, log_dir, runs, status)
        _stage(f"embed@{model}", root, log_dir, runs, status)
        _stage(f"evaluate@{model}", root, log_dir, runs, status)
    if register_champion:
        _stage("register", root, log_dir, runs, status, single_item=True)
        if package:  # the champion's gallery index, then the Bento
            _stage("index", root, log_dir, runs, status, single_item=True)
            _stage("package", root, log_dir, runs, status, single_item=True)
    report = reporting.run_markdown(dataset, root, runs, source, dvc.params_diff(root))
    create_markdown_artifact(report, key=f"training-report-{dataset.replace('_', '-')}",
                             description=f"training run on {dataset}")
    table = reporting.metrics_table(root, dataset)
    if table:
        create_table_artifact(table, key=f"metrics-{dataset.replace('_', '-')}",
                              description=f"zero-shot metrics on {dataset}")
    return {"dataset": dataset, "models": chosen, "stages": runs, "report": report}
