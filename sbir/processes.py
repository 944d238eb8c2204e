"""Child processes that stop with their parent: what a supervisor, container runtime or terminal sends to the
parent (SIGTERM, SIGINT, SIGHUP) reaches the child, and the parent waits for it before it ends itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_SECONDS = 30.0


def run_child(args: Sequence[str], keep_line: Callable[[str], bool] | None = None, **popen: Any) -> int:
    """Run ``args`` to its end and return its exit status (128 + N when signal N ended it, as a shell reports).

    The child leads a process group of its own, and signals go to that whole group: DVC, for one, ignores SIGINT
    and has no SIGTERM handler while a stage runs, so only the stage's process itself can stop the stage. On the
    main thread the signals of ``FORWARDED`` are passed on while the child runs (a terminal's Ctrl-C reaches this
    process alone, and is passed on once); elsewhere (a Prefect task's thread, where handlers cannot be set) an
    exception in the parent stops the group: SIGTERM, then SIGKILL after ``GRACE_SECONDS``. ``keep_line``: the
    child's stdout and stderr pass through it line by line (a line it refuses is not shown) to this process's own."""
    popen["start_new_session"] = True
    if keep_line is not None:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    process = subprocess.Popen(list(args), **popen)
    copiers = [] if keep_line is None else [
        threading.Thread(target=_copy_lines, args=(source, target, keep_line), daemon=True)
        for source, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))]
    for copier in copiers:
        copier.start()
    previous = _forward_signals(process) if threading.current_thread() is threading.main_thread() else {}
    try:
        code = process.wait()
        for copier in copiers:
            copier.join()
    except BaseException:
        _stop(process)
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - code if code < 0 else code


def _copy_lines(source: TextIO, target: TextIO, keep_line: Callable[[str], bool]) -> None:
    for line in source:
        if keep_line(line):
            target.write(line)
            target.flush()


def _forward_signals(process: subprocess.Popen) -> dict[int, Any]:
    def forward(number: int, _frame: object) -> None:
        _signal_group(process, number)

    return {number: signal.signal(number, forward) for number in FORWARDED}


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:  # the group has ended
        pass


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def replace_with(args: Sequence[str]) -> None:
    """Become ``args`` (``exec``): signals sent to this process reach the program itself; never returns."""
    os.execv(args[0], list(args))
