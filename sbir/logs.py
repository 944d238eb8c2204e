"""Logging set-up for entry points (stages, flows, the service): one format, to stderr, applied once.

Library modules only call ``logging.getLogger(__name__)``; importing them configures nothing.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROJECT_LOGGERS = ("sbir", "models", "stages", "flows", "serving")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test harness may swap and close it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def setup_logging(level: int | str = logging.INFO) -> None:
    """Send records to stderr with timestamps (idempotent): the project's at ``level``, libraries' warnings only."""
    root = logging.getLogger()
    if not any(getattr(handler, "_zssbir", False) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        handler._zssbir = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def format_duration(seconds: float) -> str:
    """'1h02m', '3m05s', '42s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
