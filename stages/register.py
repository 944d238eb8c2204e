"""Stage ``register``: select the best evaluated model, register its encoders, promote it only if it wins.

Reads every ``artifacts/eval/<dataset>/<model>/metrics.json`` of the evaluation dataset, picks the best
candidate (trained methods; baselines too if ``include_baselines``) by the primary metric, registers its sketch
and photo encoders in the BentoML model store (``stages.model_store``) and gates it against the current champion
of the same dataset and protocol: promoted only if it beats the champion by more than ``margin``.

Lineage: in a DVC project, a model whose evaluation or checkpoint no longer matches ``dvc.lock`` (its stages'
definitions, code, data or parameters changed after they ran, or its files on disk are not the recorded ones;
``stages.lineage``) is not a candidate, and is listed with the reasons; a registration records its train stage's dependency hashes and
parameters from dvc.lock and the commit that recorded them (``git_revision``: that commit, else the checkout's).

Shared store: where ``register.store`` (or ``ZSSBIR_MODEL_STORE``) names one, the local champion's encoders
and registration are published to it (``stages.shared_store``), gated there against the team's champion.

Params: ``register`` (metric, margin, include_baselines, store) and ``evaluate.dataset``. Output:
``artifacts/register/<dataset>.json`` (every candidate's score, the stale models left out, the registered version,
the decision).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.checkpoint import CheckpointError, read_config
from sbir import paths
from sbir.config import ConfigError, NonNegativeFloat, Params, as_params
from sbir.io import atomic_write_json
from sbir.stage import run_stage, stage_parser
from stages.lineage import LockCheck, lineage, read_lock
from stages.model_store import Decision, Registry, RegistryError
from stages.shared_store import SharedStore, publish, store_url

log = logging.getLogger("stages.register")


@dataclass
class RegisterParams:
    """``params.yaml`` section ``register``: ``metric`` is a path into metrics.json (section/key) and names the
    protocol a champion is held under."""

    metric: str  # e.g. zero_shot/map_all/sklearn/query
    margin: NonNegativeFloat  # a challenger must beat the champion by more than this
    include_baselines: bool
    store: str  # shared model store URL (stages.shared_store), "" for none; ZSSBIR_MODEL_STORE overrides it

    def __post_init__(self) -> None:
        if "/" not in self.metric:
            raise ValueError(f"register.metric must be '<section>/<metric key>', e.g. "
                             f"'zero_shot/map_all/sklearn/query'; got {self.metric!r}")


def metric_value(document: dict[str, Any], metric: str, where: str) -> float:
    """The value at ``section/key`` of a metrics document (keys themselves contain slashes)."""
    group, key = metric.split("/", 1)
    try:
        return float(document[group][key])
    except (KeyError, TypeError) as error:
        available = sorted(document.get(group, {})) if isinstance(document.get(group), dict) else sorted(document)
        raise ConfigError(f"{where}: no metric {metric!r} (available under {group!r}: {available[:12]})") from error


def candidates(dataset: str, settings: RegisterParams, models: list[str] | None = None,
               check: LockCheck | None = None) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Score of every evaluated model that may be registered (``models`` narrows the set), and the models left out
    because their evaluation or checkpoint is stale against dvc.lock (``check``), with the reasons."""
    scores, stale = {}, {}
    for metrics_file in sorted(paths.eval_dir(dataset, "*").parent.glob("*/metrics.json")):
        name = metrics_file.parent.name
        if models is not None and name not in models:
            continue
        try:
            kind = read_config(paths.checkpoint_dir(name))["kind"]
        except CheckpointError as error:
            log.warning("skipping %s: %s", name, error)
            continue
        if kind != "method" and not settings.include_baselines:
            continue
        reasons = check.stale_reasons(f"evaluate@{name}", (f"train@{name}", f"evaluate@{name}")) if check else []
        if reasons:
            stale[name] = reasons
            log.warning("not a candidate: %s is stale against dvc.lock (%s); `dvc repro evaluate@%s` brings it "
                        "up to date", name, "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else ""), name)
            continue
        scores[name] = metric_value(json.loads(metrics_file.read_text()), settings.metric, str(metrics_file))
    return scores, stale


def register_best(dataset: str, settings: RegisterParams, registry: Registry, params: Params,
                  models: list[str] | None = None,
                  root: Path = Path(".")) -> tuple[Decision, dict[str, float], dict[str, list[str]]]:
    """Register the best candidate on ``dataset`` and gate it; returns the decision, every candidate's score and
    the stale models left out. Where the project has a dvc.lock, a candidate must match it (``stages.lineage``) and
    its registration carries its lineage; without one (a model store used outside the pipeline) nothing is
    checked."""
    stages = read_lock(root)
    check = LockCheck(stages, root) if stages is not None else None
    scores, stale = candidates(dataset, settings, models, check)
    if not scores:
        wanted = f" among {models}" if models else ""
        left_out = f"; stale against dvc.lock: {sorted(stale)}" if stale else ""
        raise RegistryError(f"no evaluated candidate{wanted} under {paths.EVAL_ROOT / dataset} "
                            f"(include_baselines={settings.include_baselines}){left_out}; run the evaluate stages "
                            "first")
    best = max(scores, key=lambda name: (scores[name], name))
    document = json.loads((paths.eval_dir(dataset, best) / "metrics.json").read_text())
    checkpoint = read_config(paths.checkpoint_dir(best))
    trained_from = lineage(f"train@{best}", stages, root) if stages is not None else None
    decision = registry.register(
        paths.checkpoint_dir(best), method=best, dataset=dataset, protocol=settings.metric, score=scores[best],
        metrics={group: document[group] for group in ("zero_shot", "generalised", "style_shift") if group in document},
        params=params.section(best), margin=settings.margin, data_fingerprint=checkpoint.get("data_fingerprint", ""),
        git=(trained_from or {}).get("committed_in"), lineage=trained_from)
    return decision, scores, stale


def run_register(args: argparse.Namespace, params: Params) -> int:
    settings = params.read(RegisterParams, "register")
    dataset = args.dataset or params.value("evaluate.dataset", str)
    registry = Registry(os.environ["BENTOML_HOME"])
    decision, scores, stale = register_best(dataset, settings, registry, params, args.models)
    verdict = "promoted to champion" if decision.promoted else "registered, not promoted"
    log.info("%s %s (%s = %.4f): %s — %s", decision.method, decision.version, settings.metric, decision.score,
             verdict, decision.reason)
    champion = (registry.champion(dataset, settings.metric) or {}).get("version")
    shared = None
    if (url := store_url(settings.store)) and champion:
        shared = publish(registry, SharedStore(url), champion, settings.metric, settings.margin).to_dict()
        log.info("shared store %s: %s %s", url, shared["version"],
                 "is the team's champion" if shared["promoted"] or shared["reason"] == "already the champion"
                 else f"not promoted — {shared['reason']}")
    atomic_write_json(paths.register_report(dataset), {
        "dataset": dataset, "settings": as_params(settings), "candidates": scores, "stale": stale,
        "decision": decision.to_dict(), "champion": champion,
        "store": paths.in_repository(Path(registry.home)) or str(registry.home),
        "shared_store": {"url": url, "decision": shared} if shared else None})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, progress=False)
    parser.add_argument("--dataset", help="evaluation dataset (default: params evaluate.dataset)")
    parser.add_argument("--models", nargs="+", help="only these evaluated models are candidates")
    return run_stage("register", parser, run_register, argv, project_homes=True)


if __name__ == "__main__":
    sys.exit(main())
