"""Committed benchmark results hold no absolute path of the machine that measured them (paths are relative to the
repository, or left out)."""

from __future__ import annotations

import re
import subprocess

from helpers import REPO_ROOT

MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|tmp|work|home|Users|mnt|private|var/folders|scratch)(?:/|\b)")


def test_committed_results_hold_no_machine_paths() -> None:
    listed = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=REPO_ROOT, capture_output=True, text=True)
    files = listed.stdout.split() if listed.returncode == 0 else []
    files = files or [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "benchmarks/results").rglob("*") if p.is_file()]
    assert files
    found = [f"{name}:{number}: {line.strip()[:120]}" for name in files
             for number, line in enumerate((REPO_ROOT / name).read_text(errors="replace").splitlines(), 1)
             if MACHINE_PATH.search(line)]
    assert not found, "absolute machine paths in committed results:\n" + "\n".join(found)


def test_the_pattern_tells_paths_from_routes() -> None:
    assert MACHINE_PATH.search('"bundle": "/home/someone/zssbir/artifacts/serving/bundle"')
    assert MACHINE_PATH.search('"server_log": "/tmp/zssbir_bench_serving.log"')
    assert not MACHINE_PATH.search('"goal": "/search p99 at 8 clients"')
    assert not MACHINE_PATH.search('"bundle": "artifacts/serving/bundle"')
