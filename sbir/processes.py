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
    child's stdout and stderr pass to this process's own, bytes as they come, except the lines it refuses; a
    progress bar's carriage-return updates pass at once, so it still animates on a terminal."""
    popen["start_new_session"] = True
    if keep_line is not None:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    process = subprocess.Popen(list(args), **popen)
    copiers = [] if keep_line is None else [
        threading.Thread(target=_copy_records, args=(source.fileno(), target, keep_line), daemon=True)
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


def _copy_records(source: int, target: TextIO, keep_line: Callable[[str], bool]) -> None:
    """Copy a pipe record by record: a record ending in "\r" (a progress update) passes at once; one ending in
    "\n" passes if ``keep_line`` keeps its text."""
    out = getattr(target, "buffer", None)
    pending, after_progress = b"", False
    while chunk := os.read(source, 65536):
        pending += chunk
        while (end := _record_end(pending)) >= 0:
            record, pending = pending[:end + 1], pending[end + 1:]
            progress = record.endswith(b"\r")
            # the line end that closes a progress bar always passes, or the next line would land on the bar
            if progress or after_progress or keep_line(record[:-1].decode("utf-8", "replace")):
                _write(target, out, record)
            after_progress = progress
    if pending:
        _write(target, out, pending)


def _record_end(data: bytes) -> int:
    ends = [index for index in (data.find(b"\n"), data.find(b"\r")) if index >= 0]
    return min(ends) if ends else -1


def _write(target: TextIO, out: Any, record: bytes) -> None:
    if out is not None:
        target.flush()
        out.write(record)
        out.flush()
    else:  # a text stream without bytes underneath (a test's capture)
        target.write(record.decode("utf-8", "replace"))
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
