"""The one shape of a stage's command line: ``--params`` (and ``--profile`` overlays), offline settings,
logging, and errors reported by kind (``sbir.errors``) — a user's mistake is one line and its exit code, a bug
keeps its traceback.

A stage module defines its pure function, then::

    def main(argv=None) -> int:
        parser = stage_parser(__doc__)
        parser.add_argument("--dataset", required=True)
        return run_stage("prepare", parser, lambda args, params: prepare(args.dataset, params), argv)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

from sbir.config import DEFAULT_PARAMS, Params
from sbir.env import apply_offline_defaults, apply_project_defaults
from sbir.errors import FILE_ERROR_EXIT, FILE_ERRORS, SbirError
from sbir.logs import setup_logging

log = logging.getLogger("stages")


def stage_parser(description: str | None, *, progress: bool = True) -> argparse.ArgumentParser:
    """A parser with the options every stage shares."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)")
    parser.add_argument("--profile", action="append", default=[], metavar="FILE",
                        help="a profile laid over the params file (a benchmark's or a paper's settings; repeatable)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    return parser


def run_stage(name: str, parser: argparse.ArgumentParser, work: Callable[[argparse.Namespace, Params], Any],
              argv: list[str] | None = None, *, project_homes: bool = False) -> int:
    """Parse ``argv``, apply the offline (and project store) settings, set up logging, load the params, run
    ``work``. Its result: an int is the exit code, a mapping is printed as one line (``summary_line``), None
    prints nothing."""
    args = parser.parse_args(argv)
    apply_offline_defaults()
    if project_homes:
        apply_project_defaults()
    setup_logging()
    try:
        result = work(args, Params.load(args.params, args.profile))
    except SbirError as error:
        log.error("%s failed (%s): %s", name, error.kind, error)
        return error.exit_code
    except FILE_ERRORS as error:
        log.error("%s failed (file): %s", name, error)
        return FILE_ERROR_EXIT
    if isinstance(result, bool) or not isinstance(result, (int, dict)) and result is not None:
        raise TypeError(f"{name}: a stage returns an exit code, a summary mapping or None, got {type(result)}")
    if isinstance(result, dict):
        print(summary_line(name, result))
        return 0
    return result or 0


def summary_line(name: str, result: dict[str, Any]) -> str:
    """A stage's result as one readable line: ``train: model dsn, steps 31, train_seconds 4.1, …``; nested
    mappings in parentheses, floats to 4 significant digits. The full documents are the stage's output files."""
    return f"{name}: {_fields(result)}"


def _fields(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{key} {_value(value)}" for key, value in mapping.items())


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return f"({_fields(value)})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)
