"""A real Prefect server on 127.0.0.1 and a runner serving the training flow on a short schedule: a run the
scheduler created (not a manual trigger) completes with its artifacts, then everything stops cleanly. The flow
runs in a copy of the session's reproduced project: what it finds up to date DVC does not run again. The server
keeps its database in SQLite (the zero-set-up default) and, as a team runs it, in PostgreSQL (a real server
started by the test: ``postgres_support``), where the flow run and its artifacts are then found."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import copy_project, run_command
from postgres_support import postgres_missing, postgres_server, psql

from flows import schedule

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(url: str, path: str, body: dict) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str] | None]:
    """None for Prefect's default SQLite file; else a running PostgreSQL the server is pointed at."""
    if request.param == "sqlite":
        yield None
        return
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    with postgres_server() as server:
        monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", server["url"])
        yield server


def test_a_scheduled_run_completes_with_its_artifacts(reproduced_project: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      database: dict[str, str] | None) -> None:
    project = copy_project(reproduced_project, tmp_path / "project")
    home, port = tmp_path / "prefect", _free_port()
    # the first run is due one interval after the runner creates the deployment; the runner (which inherits this
    # environment) looks for due runs every second instead of every 10 s
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    state = schedule.start(home, project, port=port, interval=10,
                           parameters={"models": ["baseline_hog"], "register_champion": False})
    url = state["api_url"]
    try:
        assert schedule.status(home)["running"] and schedule.healthy(url)
        deadline, completed = time.monotonic() + 420, []
        while time.monotonic() < deadline and not completed:
            finished = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}, "limit": 20}
            runs = _api(url, "/flow_runs/filter", finished)
            completed = [run for run in runs if run["state"]["type"] == "COMPLETED"]
            failed = [run for run in runs if run["state"]["type"] in ("FAILED", "CRASHED")]
            assert not failed, f"scheduled run failed; runner log:\n{(home / 'runner.log').read_text()[-4000:]}"
            time.sleep(1)
        assert completed, f"no run completed; runner log:\n{(home / 'runner.log').read_text()[-4000:]}"
        run = completed[0]
        assert run["auto_scheduled"] is True, "the run was created by the scheduler, not triggered by hand"
        assert run["parameters"]["models"] == ["baseline_hog"]
        artifacts = _api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        keys = {artifact["key"] for artifact in artifacts}
        assert {"training-report-openmoji-zs", "metrics-openmoji-zs"} <= keys
        report = next(a for a in artifacts if a["key"] == "training-report-openmoji-zs")["data"]
        assert "baseline_hog" in report and "| model |" in report
        if database is None:
            assert (home / "prefect.db").is_file()
        else:  # the run and its artifacts live in PostgreSQL, not in a SQLite file
            assert not (home / "prefect.db").exists()
            assert psql(database, f"select state_type from flow_run where id = '{run['id']}'") == ["COMPLETED"]
            stored = set(psql(database, f"select key from artifact where flow_run_id = '{run['id']}'"))
            assert {"training-report-openmoji-zs", "metrics-openmoji-zs"} <= stored
    finally:
        stopped = schedule.stop(home)
    assert stopped == ["runner", "server"]
    assert not schedule.healthy(url) and schedule.status(home) == {"running": False}
    for pid in state["pids"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    run_command(["dvc", "status"], project)  # the checkout is left usable
