"""Paper profiles that the pipeline runs: a (setup, benchmark) pair → the ``params.yaml`` changes of one
``dvc exp run``.

A *setup* (``configs/profiles.yaml``) names the model of dvc.yaml it trains and the profile files that hold the
paper's settings; a *benchmark* is ``configs/benchmarks/<name>.yaml`` with its ``prepare.<name>`` section in
params.yaml. The changes are what ``sbir.config.Params.load`` would lay over params.yaml (mappings merged key by
key, anything else replaced) — only the setup's model section and the shared ``train`` section of each setup
file, then the benchmark's file, then any extra files — written as DVC's ``-S`` overrides, plus the benchmark's
entry in ``datasets`` (its raw folder as the source DVC tracks). So nothing is copied between files by hand,
DVC records every changed value as the experiment's params, and ``dvc exp show`` compares the runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbir.config import ConfigError, Params, overlay

SETUPS_FILE = Path("configs/profiles.yaml")
BENCHMARKS_DIR = Path("configs/benchmarks")
SHARED_SECTIONS = ("train",)  # sections of a setup file that every model reads (train.runtime)


@dataclass(frozen=True)
class PaperRun:
    """One profile's run: the experiment's name, its DVC target, the dataset it evaluates on, its overrides."""

    profile: str
    model: str
    dataset: str
    changes: dict[str, Any]
    overrides: list[str]

    @property
    def target(self) -> str:
        return f"evaluate@{self.model}"


def _yaml(path: Path) -> dict[str, Any]:
    return Params.load(path).values


def setups(repo: Path = Path(".")) -> dict[str, dict[str, Any]]:
    """Setup name → {model, files} from ``configs/profiles.yaml``."""
    document = _yaml(repo / SETUPS_FILE).get("setups")
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"{repo / SETUPS_FILE}: expected a mapping 'setups' of name -> {{model, files}}")
    return document


def benchmarks(repo: Path = Path(".")) -> list[str]:
    """The benchmarks a profile may name: ``configs/benchmarks/*.yaml``."""
    return sorted(path.stem for path in (repo / BENCHMARKS_DIR).glob("*.yaml"))


def profile_names(repo: Path = Path(".")) -> list[str]:
    return [f"{setup}-{benchmark}" for setup in setups(repo) for benchmark in benchmarks(repo)]


def split_profile(profile: str, repo: Path = Path(".")) -> tuple[str, str]:
    """``zse-sketchy25`` → (``zse``, ``sketchy25``); an unknown name fails listing the known ones."""
    for setup in sorted(setups(repo), key=len, reverse=True):  # clip_prompt_fg before clip_prompt
        benchmark = profile[len(setup) + 1:]
        if profile.startswith(f"{setup}-") and benchmark in benchmarks(repo):
            return setup, benchmark
    raise ConfigError(f"unknown profile '{profile}'; known: {', '.join(profile_names(repo))}")


def profile_changes(profile: str, extra: list[Path] = (), repo: Path = Path(".")) -> tuple[str, str, dict[str, Any]]:
    """(model, dataset, the nested changes to params.yaml) of a profile, with ``extra`` files laid last."""
    setup_name, benchmark = split_profile(profile, repo)
    setup = setups(repo)[setup_name]
    model = setup["model"]
    changes: dict[str, Any] = {}
    for file in setup["files"]:
        values = _yaml(repo / file)
        if model not in values:
            raise ConfigError(f"{repo / file}: no section '{model}' (setup '{setup_name}' of {SETUPS_FILE})")
        changes = overlay(changes, {key: values[key] for key in (*SHARED_SECTIONS, model) if key in values})
    changes = overlay(changes, _yaml(repo / BENCHMARKS_DIR / f"{benchmark}.yaml"))
    for file in extra:
        changes = overlay(changes, _yaml(Path(file)))
    composed = Params(overlay(Params.load(repo / "params.yaml").values, changes), f"params.yaml + {profile}")
    root = composed.section(f"prepare.{benchmark}").get("root")  # the folder prepare reads is the one DVC tracks
    if not root:
        raise ConfigError(f"params.yaml: prepare.{benchmark} has no 'root' (the benchmark's raw folder)")
    return model, benchmark, overlay(changes, {"datasets": {benchmark: {"source": root}}})


def hydra_value(value: Any) -> str:
    """A YAML value in the override grammar of ``dvc exp run -S``; strings always quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # Hydra escapes only quotes and the backslashes before a quote or the end
        escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
        return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {hydra_value(item)}" for key, item in value.items()) + "}"
    raise ConfigError(f"cannot pass {value!r} ({type(value).__name__}) as a dvc exp run parameter")


def overrides(changes: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """``-S`` overrides that turn ``base`` into ``overlay(base, changes)``: mappings merge key by key (a key new
    to ``base`` is added with ``+``), anything else replaced."""
    out = []
    for key, value in changes.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out.extend(overrides(value, base[key], f"{path}."))
        else:
            out.append(f"{'' if key in base else '+'}{path}={hydra_value(value)}")
    return out


def paper_run(profile: str, extra: list[Path] = (), repo: Path = Path(".")) -> PaperRun:
    """Everything ``zssbir reproduce`` hands DVC for ``profile``; the changes are checked against the models'
    typed sections before anything runs (``check``)."""
    model, dataset, changes = profile_changes(profile, list(extra), repo)
    base = Params.load(repo / "params.yaml").values
    return PaperRun(profile, model, dataset, changes, overrides(changes, base))


def composed(run: PaperRun, repo: Path = Path(".")) -> Params:
    """params.yaml as the experiment will see it."""
    return Params(overlay(Params.load(repo / "params.yaml").values, run.changes), f"params.yaml + {run.profile}")


def check(run: PaperRun, repo: Path = Path(".")) -> None:
    """Every section the run's stages read, type-checked before DVC starts (a typo fails here, in one line)."""
    from stages.evaluate import EvaluateParams
    from stages.train import method_settings

    params = composed(run, repo)
    method_settings(params, run.model)
    params.read(EvaluateParams, "evaluate")
    if params.value("train.dataset", str) != run.dataset:
        raise ConfigError(f"{run.profile}: train.dataset is {params.value('train.dataset', str)!r}, "
                          f"not the benchmark {run.dataset!r}")


def describe(repo: Path = Path(".")) -> str:
    """The known setups and benchmarks, for ``zssbir reproduce --list``."""
    lines = ["setups (configs/profiles.yaml):"]
    lines += [f"  {name}: model {setup['model']}, files {', '.join(setup['files'])}"
              for name, setup in setups(repo).items()]
    lines += [f"benchmarks ({BENCHMARKS_DIR}): {', '.join(benchmarks(repo))}",
              "profiles: <setup>-<benchmark>, e.g. zse-sketchy25"]
    return "\n".join(lines)


__all__ = ["PaperRun", "setups", "benchmarks", "profile_names", "split_profile", "profile_changes", "hydra_value",
           "overrides", "paper_run", "composed", "check", "describe"]
