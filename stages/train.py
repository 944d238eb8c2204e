"""Stage ``train@<model>``: train a method on a prepared dataset's ``train`` split, or build a baseline's folder.

A method (``models.method``) trains through the method-agnostic engine: seeded and deterministic on CPU, bf16
autocast on CUDA, data-parallel under torchrun (``torchrun --nproc-per-node 2 -m stages.train --model dsn``),
resumable after a kill from ``artifacts/train_state/<model>/<dataset>/`` (removed once training completes).
A baseline has nothing to learn: its folder holds its params (and random weights, for a CNN).

Params: ``train`` (dataset, the artwork styles whose training rows join it, runtime) and the model's own section (``<model>.train``, ``<model>.model``, or a
baseline's arguments). Outputs: ``artifacts/checkpoints/<model>/`` (checkpoint format v1) and
``artifacts/train/<model>/`` (DVCLive log, ``summary.json``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.checkpoint import save_baseline, save_method
from models.engine import TrainConfig, TrainSection
from models.method import Method
from models.registry import create_model, is_baseline, kind_of
from sbir import paths
from sbir.config import ConfigError, Params
from sbir.io import atomic_write_json
from sbir.datasets.artwork import HELD_OUT
from sbir.manifest import Manifest, ManifestError, read_manifest
from sbir.stage import run_stage, stage_parser

log = logging.getLogger("stages.train")


@dataclass
class MethodSection:
    """``params.yaml`` ``<method>``: optimisation settings and the method's own config (checked by the method)."""

    train: TrainConfig
    model: dict[str, Any]


def method_settings(params: Params, name: str) -> tuple[Method, TrainConfig]:
    """The method named ``name`` with its config, and its optimisation settings, from its params section."""
    if kind_of(name) != "method":  # an unknown name fails here, listing the available ones
        raise ConfigError(f"'{name}' is a baseline: it is built, not trained")
    values = params.read(MethodSection, name)
    method = create_model(name, values.model, f"{params.source}: {name}.model")
    method.use_dataset(params.value("train.dataset", str))
    return method, values.train


def training_styles(dataset: str, styles: list[str]) -> list[Manifest]:
    """The prepared artwork sets of ``train.styles``, each drawn for ``dataset``; a held-out style (never trained
    on: its numbers measure generalisation) or a set of another dataset is a ConfigError."""
    held_out = sorted(set(styles) & set(HELD_OUT))
    if held_out:
        raise ConfigError(f"train.styles lists {held_out}: held-out styles are never trained on (their cross-style "
                          f"numbers measure generalisation); drop them from train.styles")
    manifests = []
    for name in styles:
        try:
            manifest = read_manifest(paths.prepared_dir(name))
        except ManifestError as error:
            raise ConfigError(f"train.styles lists '{name}': {error}") from error
        if manifest.extra.get("gallery_for") != dataset:
            raise ConfigError(f"train.styles lists '{name}', drawn for {manifest.extra.get('gallery_for')!r}, not "
                              f"for train.dataset {dataset!r}")
        manifests.append(manifest)
    return manifests


class DVCLiveEpochs:
    """Each epoch's mean loss terms and learning rate to DVCLive (one DVCLive step per epoch)."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def __call__(self, epoch: int, means: dict[str, float]) -> None:
        for key, value in means.items():
            self.live.log_metric(f"train/{key}", value)
        self.live.next_step()


def train_method(name: str, params: Params, *, progress: bool = True, stop_after_steps: int | None = None,
                 on_checkpoint=None) -> dict[str, Any]:
    """Train (resuming if a state exists), export the model folder; returns the summary."""
    from dvclive import Live

    from models.data import read_split
    from models.engine import setup_distributed, train

    settings = params.read(TrainSection, "train")
    method, config = method_settings(params, name)
    ctx = setup_distributed()
    state_dir = paths.train_state_dir(name, settings.dataset)
    log_dir = paths.train_log_dir(name)
    manifest = read_manifest(paths.prepared_dir(settings.dataset))
    data = read_split(manifest, "train", training_styles(settings.dataset, settings.styles))
    live = Live(str(log_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None,
                resume=(state_dir / "state.pt").is_file()) if ctx.is_main else None
    log.info("training %s on %s%s: %d sketches, %d photos, %d categories, %d epochs", name, settings.dataset,
             f" + styles {', '.join(settings.styles)}" if settings.styles else "", len(data.sketch_paths),
             len(data.photo_paths), data.num_classes, config.epochs)
    started = time.perf_counter()
    net, times = train(method, config, settings.runtime, data, state_dir, log_epoch=DVCLiveEpochs(live) if live else None,
                       on_checkpoint=on_checkpoint, progress=progress, stop_after_steps=stop_after_steps, ctx=ctx)
    train_seconds = time.perf_counter() - started
    summary = {"model": name, "method": name, "dataset": settings.dataset, "styles": settings.styles,
               "world_size": ctx.world_size,
               "device": str(ctx.device), "train_sketches": len(data.sketch_paths),
               "train_photos": len(data.photo_paths), "categories": data.num_classes, "steps": times.steps,
               "train_seconds": round(train_seconds, 1), "data_share_of_step": round(times.data_share, 4),
               "seconds_per_step": round((times.data + times.compute) / max(times.steps, 1), 4),
               "completed": times.completed}
    if ctx.is_main and times.completed:
        save_method(paths.checkpoint_dir(name), method, net,
                    {"dataset": settings.dataset, "styles": settings.styles, "train_categories": data.categories,
                     "data_fingerprint": data.fingerprint, "train": asdict(config)})
        atomic_write_json(log_dir / "summary.json", summary)
        shutil.rmtree(state_dir, ignore_errors=True)
    if live:
        live.end()
    return summary


def build_baseline(name: str, params: Params) -> dict[str, Any]:
    """A baseline's model folder: nothing to learn, so its params (and random weights, if any) are the model."""
    values = params.section(name)
    model = create_model(name, values, f"{params.source}: {name}", "baseline")
    save_baseline(paths.checkpoint_dir(name), name, values, model)
    summary = {"model": name, "baseline": True, "embedding_dim": model.embedding_dim}
    atomic_write_json(paths.train_log_dir(name) / "summary.json", summary)
    return summary


class HoldAfterCheckpoint:
    """Test hook: after the first saved state, write ``marker`` and wait to be killed (no race with a timer)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, step: int) -> None:
        self.marker.write_text(str(step))
        while True:
            time.sleep(1)


def run_train(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    if is_baseline(args.model):
        return build_baseline(args.model, params)
    hold = HoldAfterCheckpoint(args.hold_after_checkpoint) if args.hold_after_checkpoint else None
    return train_method(args.model, params, progress=not args.no_progress, stop_after_steps=args.stop_after_steps,
                        on_checkpoint=hold)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="a method (e.g. dsn) or a baseline (e.g. baseline_hog)")
    parser.add_argument("--stop-after-steps", type=int, default=None, help="end early (smoke runs, tests)")
    parser.add_argument("--hold-after-checkpoint", type=Path, default=None, metavar="MARKER",
                        help="tests: after the first saved state, write MARKER and wait to be killed")
    return run_stage("train", parser, run_train, argv)


if __name__ == "__main__":
    sys.exit(main())
