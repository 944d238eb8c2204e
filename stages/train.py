"""Stage ``train``: train the DSN-style method on a prepared dataset's ``train`` split.

Seeded and deterministic on CPU; bf16 autocast on CUDA; data-parallel under ``torchrun`` (gloo on CPU,
NCCL on GPUs): ``torchrun --nproc-per-node 2 -m stages.train``. An interrupted run resumes exactly from
``artifacts/train_state/<dataset>/`` (removed once training completes). Params: ``train``.
Outputs: ``artifacts/checkpoints/dsn/`` (safetensors + config.json), ``artifacts/train/`` (DVCLive log, summary).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.backbones import BackboneError
from sbir.config import ConfigError, build, load_params, section
from sbir.manifest import ManifestError, read_manifest

CHECKPOINT_ROOT = Path("artifacts/checkpoints")
TRAIN_ROOT = Path("artifacts/train")
STATE_ROOT = Path("artifacts/train_state")


def parse_config(values: dict[str, Any], where: str):
    """``train`` section → (dataset name, TrainConfig)."""
    from models.dsn import DSNConfig
    from models.engine import TrainConfig

    values = dict(values)
    dataset = values.pop("dataset", "openmoji_zs")
    method = values.pop("method", "dsn")
    if method != "dsn":
        raise ConfigError(f"{where}: method '{method}' is not available; implemented: ['dsn']")
    model = build(DSNConfig, values.pop("model", {}) or {}, f"{where}.model")
    return dataset, build(TrainConfig, {**values, "model": model}, where)


class EpochLogger:
    """Averages per-step values over an epoch and hands them to DVCLive (one DVCLive step per epoch)."""

    def __init__(self, live: Any, steps_per_epoch: int) -> None:
        self.live = live
        self.steps_per_epoch = steps_per_epoch
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def __call__(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key not in ("step", "epoch"):
                self.sums[key] += float(value)
        self.count += 1
        if values["step"] % self.steps_per_epoch == 0:
            for key, total in self.sums.items():
                self.live.log_metric(f"train/{key}", total / self.count)
            self.live.next_step()
            self.sums.clear()
            self.count = 0


def run_training(dataset: str, config, *, prepared_root: Path = Path("data/prepared"),
                 checkpoint_dir: Path = CHECKPOINT_ROOT / "dsn", train_dir: Path = TRAIN_ROOT,
                 state_dir: Path | None = None, progress: bool = True,
                 stop_after_steps: int | None = None) -> dict[str, Any]:
    """Load the train split, train (resuming if a state exists), export the model; returns the summary."""
    from dvclive import Live

    from models.data import PairSampler, load_paired_images
    from models.dsn import save_model
    from models.engine import setup_distributed, train

    ctx = setup_distributed()
    state_dir = state_dir or STATE_ROOT / dataset
    manifest = read_manifest(prepared_root / dataset)
    started = time.perf_counter()
    data = load_paired_images(manifest, "train", config.model.image_size, progress=progress and ctx.is_main)
    load_seconds = time.perf_counter() - started
    steps_per_epoch = PairSampler(data, config.batch_size, config.seed, config.sketches_per_category).steps_per_epoch
    live = Live(str(train_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, report=None,
                resume=(state_dir / "state.pt").is_file()) if ctx.is_main else None
    logger = EpochLogger(live, steps_per_epoch) if live else None
    started = time.perf_counter()
    net, times = train(config, data, state_dir, log=logger, progress=progress, stop_after_steps=stop_after_steps,
                       ctx=ctx)
    train_seconds = time.perf_counter() - started
    summary = {"dataset": dataset, "world_size": ctx.world_size, "device": str(ctx.device),
               "train_sketches": len(data.sketches), "train_photos": len(data.photos),
               "categories": data.num_classes, "steps": times.steps, "train_seconds": round(train_seconds, 1),
               "image_load_seconds": round(load_seconds, 1), "data_share_of_step": round(times.data_share, 4),
               "seconds_per_step": round((times.data + times.compute) / max(times.steps, 1), 4)}
    summary["completed"] = times.completed
    if ctx.is_main and times.completed:
        save_model(net, checkpoint_dir, {"dataset": dataset, "train_categories": data.categories,
                                         "train": {k: v for k, v in asdict(config).items() if k != "model"}})
        train_dir.mkdir(parents=True, exist_ok=True)
        (train_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(state_dir, ignore_errors=True)
    if live:
        live.end()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--stop-after-steps", type=int, default=None, help="end early (tests, smoke runs)")
    args = parser.parse_args(argv)
    try:
        dataset, config = parse_config(section(load_params(args.params), "train", source=args.params),
                                       f"{args.params}: train")
        summary = run_training(dataset, config, progress=not args.no_progress, stop_after_steps=args.stop_after_steps)
    except (ConfigError, ManifestError, ValueError, TypeError, BackboneError) as error:
        print(f"train failed: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
