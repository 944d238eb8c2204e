"""Expensive session fixtures built once per test run, however many pytest-xdist workers run it.

xdist's controller (where the run plainly includes the tests that need a build) or else the first worker to start a
test claims a build (an exclusive file) and starts it in the background (a subprocess, so the tests go on); every
worker that needs the result waits for the build's ``done`` marker. Without xdist the one process plays every
part."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DONE, FAILED, LOG = "done", "failed", "build.log"
TESTS = Path(__file__).resolve().parent
REPRODUCED = "reproduced"
# fixture name -> (its folder under the shared root, the script of tests/ that builds it there, its arguments)
BUILDS = {"reproduced_project": (REPRODUCED, "build_reproduced.py", ["project"])}


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run sees: the run's base temp (xdist gives each worker a folder below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# Runs the build, then writes its marker; if the test process that started it dies (killed, interrupted), the
# build's whole process group is stopped rather than left running.
WRAPPER = """
import os, pathlib, signal, subprocess, sys, time
folder, parent, command = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
build = subprocess.Popen(command)
while build.poll() is None:
    if os.getppid() != parent:
        (folder / "failed").write_text("the test process that started the build is gone")
        os.killpg(0, signal.SIGTERM)
    time.sleep(1)
(folder / ("done" if build.returncode == 0 else "failed")).write_text(str(build.returncode))
sys.exit(build.returncode)
"""


def needs_a_build(item: pytest.Item) -> bool:
    return bool(set(BUILDS) & set(getattr(item, "fixturenames", ())))


def start_needed(items: list[pytest.Item], tmp_path_factory: pytest.TempPathFactory) -> list[subprocess.Popen]:
    """Start each build of ``BUILDS`` that a collected test needs and nobody has claimed."""
    needed = {fixture for item in items for fixture in set(BUILDS) & set(getattr(item, "fixturenames", ()))}
    return start_builds(shared_root(tmp_path_factory), sorted(needed))


def start_builds(root: Path, fixtures: list[str]) -> list[subprocess.Popen]:
    """Start the builds of ``fixtures`` under ``root`` that nobody has claimed yet."""
    started = []
    for fixture in fixtures:
        name, script, arguments = BUILDS[fixture]
        process = start(root / name, [sys.executable, str(TESTS / script), *arguments])
        started += [process] if process else []
    return started


def stop(processes: list[subprocess.Popen]) -> None:
    """Stop the builds still running (xdist's controller at the end: no worker is left to need them)."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()


def finish(processes: list[subprocess.Popen]) -> None:
    """Wait for the builds this worker started (other workers may need them); stop them if the wait is cut."""
    try:
        for process in processes:
            process.wait()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)


def start(folder: Path, command: list[str]) -> subprocess.Popen | None:
    """Start ``command`` (it builds into ``folder`` and must exit 0) unless another process already claimed it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    log = open(folder / LOG, "w")  # noqa: SIM115 - the child writes it until it ends
    return subprocess.Popen([sys.executable, "-c", WRAPPER, str(folder), str(os.getpid()), *command], stdout=log,
                            stderr=log, cwd=folder, start_new_session=True)


WAIT_SECONDS = 1800  # a test that waits for a build gets this long (tests/conftest.py raises its pytest-timeout)


def wait(folder: Path, timeout: float = WAIT_SECONDS) -> Path:
    """Block until the build in ``folder`` ends; its log on failure (or after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / DONE).exists():
            return folder
        if (folder / FAILED).exists():
            raise RuntimeError(f"the shared build in {folder} failed:\n{_tail(folder)}")
        time.sleep(0.5)
    raise TimeoutError(f"the shared build in {folder} did not end within {timeout:.0f} s:\n{_tail(folder)}")


def _tail(folder: Path) -> str:
    log = folder / LOG
    return log.read_text()[-4000:] if log.exists() else "(no log)"
