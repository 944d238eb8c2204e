"""Running DVC stages from a flow: one at a time, logged to a file, failures classified as transient or not.

DVC owns caching and lineage; a flow only says which stage runs next. DVC locks the repository, so stages run
one after another, never two at once on one checkout. A stage killed by a signal (out of memory, a pre-empted
node) or a repository lock held by another process is worth retrying; a stage that exits with an error of its
own (bad data: 1, bad config: 2, a crash) is not — running it again gives the same answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from sbir.env import OFFLINE_DEFAULTS, project_homes
from stages.lineage import read_lock, upstream

TRANSIENT_PATTERNS = (
    re.compile(r"Unable to acquire lock", re.I),
    re.compile(r"exited with -(9|15)\b"),       # killed by SIGKILL / SIGTERM (e.g. the kernel's OOM killer)
    re.compile(r"exited with 13[78]\b"),        # 128 + signal, as shells and containers report it
    re.compile(r"database is locked", re.I),
)


DVC_NOISE = re.compile(r"^(To track the changes with git, run:|To enable auto staging, run:|\s+git add |"
                       r"\s+dvc config core\.autostage|Use `dvc push`|Updating lock file|Generating lock file)")


class QuietOutput:
    """A line filter (``sbir.processes.run_child``) for `dvc repro` shown to a user: each stage's name, command
    and its own lines stay; DVC's hints (git add, autostage, push), its lock-file notices and runs of blank lines
    go. Everything stays in dvc.lock and the stages' outputs."""

    def __init__(self) -> None:
        self.after_blank = True

    def __call__(self, line: str) -> bool:
        if DVC_NOISE.match(line):
            return False
        blank = not line.strip()
        keep = not (blank and self.after_blank)
        self.after_blank = blank
        return keep


class StageFailed(RuntimeError):
    """A DVC command that failed: which stage, its exit code, whether retrying may help, the tail of its log."""

    def __init__(self, target: str, returncode: int, log_tail: str, log_path: Path) -> None:
        self.target, self.returncode, self.log_tail, self.log_path = target, returncode, log_tail, log_path
        self.transient = any(pattern.search(log_tail) for pattern in TRANSIENT_PATTERNS) or returncode < 0
        kind = "transient, will retry" if self.transient else "not transient"
        super().__init__(f"stage {target} failed with exit code {returncode} ({kind}); log: {log_path}\n"
                         f"--- last lines ---\n{log_tail}")


@dataclass(frozen=True)
class StageRun:
    target: str
    command: list[str]
    seconds: float
    log_path: Path
    ran: bool  # False when DVC found the stage up to date

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "command": " ".join(self.command), "seconds": round(self.seconds, 1),
                "log": str(self.log_path), "ran": self.ran}


def stage_environment(repo: Path) -> dict[str, str]:
    """The environment stages run in: offline defaults, the project's own model store and Prefect home (unless
    the caller's environment names others), this interpreter's tools first on PATH."""
    return {**OFFLINE_DEFAULTS, **project_homes(repo), **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_path(target: str, log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / f"{re.sub(r'[^A-Za-z0-9_.@-]', '_', target)}.log"


def run_dvc(args: list[str], target: str, repo: Path, log_dir: Path, timeout: float | None = None) -> StageRun:
    """``dvc <args>`` in ``repo``; its output goes to ``log_dir/<target>.log``; a failure raises StageFailed."""
    log_path = _log_path(target, log_dir)
    command = [str(Path(sys.executable).with_name("dvc")), *args]
    started = time.monotonic()
    with open(log_path, "w") as log:
        try:
            result = subprocess.run(command, cwd=repo, env=stage_environment(repo), stdout=log, stderr=subprocess.STDOUT, text=True,
                                    timeout=timeout)
            returncode = result.returncode
        except subprocess.TimeoutExpired:
            log.write(f"\ntimed out after {timeout} s\n")
            returncode = -9
    output = log_path.read_text(errors="replace")
    if returncode != 0:
        raise StageFailed(target, returncode, tail(output), log_path)
    ran = "Running stage" in output
    return StageRun(target, ["dvc", *args], time.monotonic() - started, log_path, ran)


@dataclass(frozen=True)
class PipelineStatus:
    """`dvc status` of the whole pipeline at one moment, with dvc.lock's graph: enough to tell, without starting
    DVC again, that `dvc repro <target>` would find nothing to run (a no-op repro costs a DVC start, ~1 s)."""

    changed: frozenset[str]
    upstream: dict[str, frozenset[str]]  # stage -> every stage it depends on, directly or not

    def up_to_date(self, target: str, ran: set[str]) -> bool:
        """Nothing changed in ``target`` or upstream of it, and none of those stages ran since the status."""
        if target not in self.upstream:
            return False
        chain = {target} | self.upstream[target]
        return not chain & self.changed and not chain & ran


def pipeline_status(repo: Path) -> PipelineStatus | None:
    """One `dvc status` for every stage; None where it cannot be trusted to stand for each stage's own status
    (DVC failed, something outside dvc.lock's stages changed, a stage was never run)."""
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status", "--json"], cwd=repo,
                            capture_output=True, text=True, env=stage_environment(repo))
    stages = read_lock(repo)
    if result.returncode != 0 or stages is None:
        return None
    try:
        changed = set(json.loads(result.stdout or "{}"))
    except json.JSONDecodeError:
        return None
    if not changed <= set(stages):
        return None
    return PipelineStatus(frozenset(changed), upstream(stages))


def skipped(target: str, log_dir: Path) -> StageRun:
    """The record of a stage the flow's `dvc status` found up to date (DVC not started)."""
    log_path = _log_path(target, log_dir)
    log_path.write_text(f"{target}: up to date (dvc status of the pipeline at the flow's start; nothing upstream "
                        "ran since)\n")
    return StageRun(target, ["dvc", "status"], 0.0, log_path, ran=False)


def repro(target: str, repo: Path, log_dir: Path, single_item: bool = False,
          timeout: float | None = None) -> StageRun:
    return run_dvc(["repro", *(["--single-item"] if single_item else []), target], target, repo, log_dir, timeout)


def exp_run(target: str, set_params: list[str], repo: Path, log_dir: Path, timeout: float | None = None) -> StageRun:
    """``dvc exp run -S k=v ... <target>``: the parameter change lands in params.yaml, recorded as an experiment."""
    args = ["exp", "run", *[arg for pair in set_params for arg in ("-S", pair)], target]
    return run_dvc(args, target, repo, log_dir, timeout)


def pipeline_models(repo: Path) -> list[str]:
    """The models of the pipeline: the ``models`` entry of ``dvc.yaml``'s vars."""
    document = yaml.safe_load((repo / "dvc.yaml").read_text())
    for entry in document.get("vars", []):
        if isinstance(entry, dict) and "models" in entry:
            return list(entry["models"])
    raise ValueError(f"{repo / 'dvc.yaml'}: no 'models' entry under vars")


def params_diff(repo: Path) -> dict[str, dict[str, object]]:
    """Parameters that differ from the last commit (``dvc params diff``): what this run changed."""
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "params", "diff", "--json"], cwd=repo,
                            capture_output=True, text=True, env=stage_environment(repo))
    if result.returncode != 0 or not result.stdout.strip():
        return {}
    changes = {}
    for changed in json.loads(result.stdout).values():
        changes.update({key: {"old": values.get("old"), "new": values.get("new")} for key, values in changed.items()})
    return changes
