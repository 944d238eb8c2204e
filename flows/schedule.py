"""The training flow on a schedule: a real Prefect server on 127.0.0.1 and a runner serving the flow.

``start`` launches ``prefect server start`` (its SQLite database under ``PREFECT_HOME``, project-local
``.prefect/`` by default; for production set ``PREFECT_API_DATABASE_CONNECTION_URL`` to a PostgreSQL URL, e.g.
``postgresql+asyncpg://prefect:<password>@db:5432/prefect``) and a runner process that serves the training flow
with a cron schedule (one run at a time: DVC locks the checkout). Both run in the background; their pids are
kept in ``PREFECT_HOME`` so ``stop`` (SIGTERM: Prefect's runner ignores SIGINT) ends them cleanly.
``serve`` is the runner itself, in the foreground. Schedules need a real server: Prefect's temporary server
only warns "Cannot schedule flows on an ephemeral server".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 4200
DEFAULT_CRON = "0 3 * * *"
DEPLOYMENT = "scheduled"


class SchedulerError(RuntimeError):
    """The server or runner could not be started or stopped: says which and where its log is."""


@dataclass(frozen=True)
class SchedulerFiles:
    home: Path

    @property
    def state(self) -> Path:
        return self.home / "scheduler.json"

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn(args: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def start_server(home: Path, port: int = DEFAULT_PORT, timeout: float = 180) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port``; returns once ``/api/health`` answers."""
    url = api_url(port)
    if healthy(url):
        raise SchedulerError(f"something already answers on {url}; stop it or choose another --port")
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true")}
    env.pop("PREFECT_API_URL", None)
    files = SchedulerFiles(home)
    process = _spawn([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                     files.log("server"), env, home)
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            raise SchedulerError(f"the Prefect server did not become healthy on {url} within {timeout:.0f} s; "
                                 f"log: {files.log('server')}")
        time.sleep(0.5)
    return process


def start_runner(home: Path, repo: Path, port: int, cron: str | None, interval: int | None,
                 parameters: dict[str, object]) -> subprocess.Popen:
    """A background runner serving the training flow against the server on ``port``."""
    args = [sys.executable, "-m", "flows.schedule", "--port", str(port),
            "--parameters", json.dumps(parameters)]
    args += ["--interval", str(interval)] if interval else ["--cron", cron or DEFAULT_CRON]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url(port), "ZSSBIR_REPO": str(repo)}
    return _spawn(args, SchedulerFiles(home).log("runner"), env, repo)


def start(home: Path, repo: Path, port: int = DEFAULT_PORT, cron: str | None = DEFAULT_CRON,
          interval: int | None = None, parameters: dict[str, object] | None = None) -> dict[str, object]:
    """Server and runner in the background; their pids and the API URL go to ``<home>/scheduler.json``."""
    files = SchedulerFiles(home)
    if files.state.is_file() and any(_alive(pid) for pid in json.loads(files.state.read_text())["pids"].values()):
        raise SchedulerError(f"a scheduler is already running ({files.state}); `zssbir scheduler stop` first")
    home.mkdir(parents=True, exist_ok=True)
    server = start_server(home, port)
    runner = start_runner(home, repo, port, cron, interval, {"repo": str(repo), **(parameters or {})})
    state = {"api_url": api_url(port), "pids": {"server": server.pid, "runner": runner.pid},
             "schedule": {"interval_s": interval} if interval else {"cron": cron}, "repo": str(repo),
             "logs": {name: str(files.log(name)) for name in ("server", "runner")}}
    files.state.write_text(json.dumps(state, indent=2))
    return state


def stop(home: Path, timeout: float = 30) -> list[str]:
    """SIGTERM the runner, then the server (their whole process groups); SIGKILL what outlives ``timeout``."""
    files = SchedulerFiles(home)
    if not files.state.is_file():
        return []
    pids = json.loads(files.state.read_text())["pids"]
    stopped = []
    for name in ("runner", "server"):
        pid = pids.get(name)
        if pid is None or not _alive(pid):
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5  # a kill is not instant: reap it once it has died, or it stays a zombie
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
        stopped.append(name)
    files.state.unlink()
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(home: Path) -> dict[str, object]:
    files = SchedulerFiles(home)
    if not files.state.is_file():
        return {"running": False}
    state = json.loads(files.state.read_text())
    alive = {name: _alive(pid) for name, pid in state["pids"].items()}
    return {**state, "running": all(alive.values()), "alive": alive, "healthy": healthy(state["api_url"])}


def serve(port: int | None, cron: str | None, interval: int | None, parameters: dict[str, object]) -> None:
    """The runner, in the foreground: serve the training flow with a schedule, one run at a time."""
    if port is not None:
        os.environ["PREFECT_API_URL"] = api_url(port)
    from flows.training import training_flow

    schedule = {"interval": interval} if interval else {"cron": cron or DEFAULT_CRON}
    training_flow.serve(name=DEPLOYMENT, parameters=parameters, limit=1, **schedule)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Serve the training flow with a schedule (the runner).")
    parser.add_argument("--port", type=int, default=None, help="server port on 127.0.0.1 (default: PREFECT_API_URL)")
    parser.add_argument("--cron", default=DEFAULT_CRON)
    parser.add_argument("--interval", type=int, default=None, help="seconds between runs instead of --cron")
    parser.add_argument("--parameters", default="{}", help="JSON object of flow parameters")
    args = parser.parse_args(argv)
    from sbir.env import apply_offline_defaults, apply_project_defaults

    apply_offline_defaults()
    apply_project_defaults(os.environ.get("ZSSBIR_REPO", "."))
    serve(args.port, args.cron, args.interval, json.loads(args.parameters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
