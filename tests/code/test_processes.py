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

CHILD = """
import pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
if sys.argv[2] == "trap":
    def leave(number, frame):
        (folder / "child-got").write_text(str(number))
        sys.exit(7)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
(folder / "child-ready").write_text("")
time.sleep(120)
"""
PARENT = """
import sys
from sbir.processes import run_child
sys.exit(run_child([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]]))
"""


def _parent(tmp_path: Path, mode: str) -> subprocess.Popen:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(tmp_path), mode], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "child-ready").exists():
        assert parent.poll() is None and time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)
    return parent


@pytest.mark.parametrize(("number", "mode", "code"), [(signal.SIGTERM, "trap", 7), (signal.SIGINT, "trap", 7),
                                                      (signal.SIGTERM, "default", 128 + signal.SIGTERM)])
def test_a_signal_to_the_parent_reaches_the_child(tmp_path: Path, number: int, mode: str, code: int) -> None:
    parent = _parent(tmp_path, mode)
    try:
        os.kill(parent.pid, number)  # the parent only, not its process group
        assert parent.wait(timeout=30) == code
        if mode == "trap":
            assert (tmp_path / "child-got").read_text() == str(int(number))
        with pytest.raises(ProcessLookupError):  # nothing of the group is left
            os.killpg(parent.pid, 0)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
