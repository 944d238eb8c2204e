"""Child processes stop with their parent: a signal sent to the parent alone (as a supervisor sends it) reaches
the child, and the parent reports how the child ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import group_alive

# The child behaves as DVC does while a stage runs: SIGINT ignored, no SIGTERM handler, waiting on its own child
# (the stage), which stops cleanly on either signal (writes what it got, exits 7); the child reports its code.
CHILD = """
import os, pathlib, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
(pathlib.Path(sys.argv[1]) / "child-pid").write_text(str(os.getpid()))
sys.exit(subprocess.call([sys.executable, "-c", sys.argv[2], sys.argv[1]]))
"""
STAGE = """
import pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
def leave(number, frame):
    (folder / "stage-got").write_text(str(number))
    sys.exit(7)
signal.signal(signal.SIGTERM, leave)
signal.signal(signal.SIGINT, leave)
(folder / "stage-ready").write_text("")
time.sleep(120)
"""
PARENT = """
import sys
from sbir.processes import run_child
sys.exit(run_child([sys.executable, "-c", sys.argv[1], *sys.argv[2:]]))
"""


def _parent(tmp_path: Path) -> subprocess.Popen:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(tmp_path), STAGE], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "stage-ready").exists():
        assert parent.poll() is None and time.monotonic() < deadline, "the stage did not start"
        time.sleep(0.05)
    return parent


@pytest.mark.parametrize(("number", "code"), [
    (signal.SIGTERM, 128 + signal.SIGTERM),  # the child dies of it; the stage stops cleanly
    (signal.SIGINT, 7),                       # the child ignores it; the stage stops and the child reports it
])
def test_a_signal_to_the_parent_reaches_the_child_and_its_children(tmp_path: Path, number: int,
                                                                    code: int) -> None:
    parent = _parent(tmp_path)
    groups = [parent.pid, int((tmp_path / "child-pid").read_text())]  # the child leads a group of its own
    try:
        os.kill(parent.pid, number)  # the parent only, not its process group
        assert parent.wait(timeout=30) == code
        assert (tmp_path / "stage-got").read_text() == str(int(number))
        deadline = time.monotonic() + 10
        while any(group_alive(group) for group in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(group_alive(group) for group in groups), "a process outlived the parent"
    finally:
        for group in groups:
            if group_alive(group):
                os.killpg(group, signal.SIGKILL)


def test_a_line_filter_passes_progress_updates_as_they_come(capfd: pytest.CaptureFixture[str]) -> None:
    """Carriage-return updates (a progress bar) pass untouched, byte for byte, so the bar still animates in place;
    whole lines go through the filter; the line end that closes a bar always passes."""
    from sbir.processes import run_child

    script = ("import sys\nsys.stdout.write('drop me\\nstep 1\\rstep 2\\rdone\\n\\nkeep me\\ndrop me\\nlast')")
    assert run_child([sys.executable, "-c", script], keep_line=lambda line: line != "drop me") == 0
    assert capfd.readouterr().out == "step 1\rstep 2\rdone\n\nkeep me\nlast"
