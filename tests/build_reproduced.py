"""Builds the session's reproduced pipeline project (``reproduced_project``) into the folder given, in the
background of a test run (``shared_build``): this repository's pipeline sized down through params, `dvc repro` of
every stage of every model (its output in ``.first-repro.log``), committed with its dvc.lock."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import commit, make_pipeline_project, run_command


def main(root: Path) -> None:
    root.mkdir(parents=True)
    make_pipeline_project(root)
    first = run_command(["dvc", "repro"], root, timeout=1800)
    (root / ".first-repro.log").write_text(first.stdout + first.stderr)
    commit(root, "lock")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
