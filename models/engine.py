"""The training engine, method-agnostic: optimiser and schedule, mixed precision, DDP, atomic checkpoints,
exact resume, logging. A method (``models.method.Method``) brings the network, losses, hooks and groups.

Seeded and deterministic on CPU (and on CUDA with a fixed cuBLAS workspace); bf16 autocast on CUDA; data
parallel under torchrun (gloo on CPU, NCCL on GPUs). Exact resume: the state saved every ``checkpoint_every``
steps holds the weights (buffers such as memory banks included), the optimiser and the global step. Batches and
augmentations are pure functions of (seed, step, rank), so a resumed run replays exactly what an uninterrupted
run would have done next, whether its images are streamed or cached.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from models.data import PairSampler, StepBatch, StepBatches, TrainSplit, decode_all, train_loader, use_cache
from models.method import Batch, Method
from sbir.config import ConfigError, Count, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from sbir.io import atomic_write
from sbir.logs import format_duration

STATE_FILE = "state.pt"
log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """A method's optimisation settings (``params.yaml`` ``<method>.train``): they change what is learned."""

    epochs: PositiveInt
    batch_size: PositiveInt
    sketches_per_category: PositiveInt  # > 1: batches of runs of that many same-category sketches (hard negatives)
    category_pairs: Fraction  # share of sketches paired with any photo of their category (unlinked photos too)
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    lr_final_factor: PositiveFloat  # DSN-style decay: lr · factor^(progress)
    seed: int
    amp: bool  # bf16 autocast on CUDA only
    channels_last: bool  # NHWC convolutions: faster on CPU (oneDNN) and on GPU tensor cores


@dataclass
class RuntimeConfig:
    """How a run is carried out (``params.yaml`` ``train.runtime``): never what it learns, so DVC ignores it."""

    num_threads: PositiveInt
    checkpoint_every: PositiveInt  # steps
    workers: Count  # DataLoader processes decoding images (streamed data only)
    prefetch: PositiveInt  # steps each worker prepares ahead
    cache: Literal["auto", "memory", "none"]  # decode the split once into memory
    cache_max_mb: Count  # auto: cache when the split's uint8 images fit in this


@dataclass
class TrainSection:
    """``params.yaml`` ``train``: the dataset methods train on (and the artwork styles of its items whose training
    rows join it), and how runs are carried out."""

    dataset: str
    styles: list[str]
    runtime: RuntimeConfig


@dataclass
class StepTimes:
    """Where a step's wall time goes: waiting for and preparing the batch (data) and the forward/backward pass
    (compute); and how far the run got (``global_step`` of ``total_steps``, counting earlier, resumed runs)."""

    data: float = 0.0
    compute: float = 0.0
    load: float = 0.0  # decoding the split into the in-memory cache, before the first step
    steps: int = 0
    global_step: int = 0
    total_steps: int = 0

    @property
    def completed(self) -> bool:
        return self.global_step >= self.total_steps

    @property
    def data_share(self) -> float:
        total = self.data + self.compute
        return self.data / total if total else 0.0


@dataclass
class Distributed:
    """This process's place in a torchrun job (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group if there is one: NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if world_size > 1 else 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Distributed(rank=rank, world_size=world_size, device=device)


def seed_everything(seed: int, threads: int) -> None:
    """Seed every generator and ask for deterministic kernels (the process's entry point owns these settings)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    # cuBLAS is deterministic only with a fixed workspace; read when the process makes its first handle
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def _gather(tensor: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    if ctx.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _load_state(path: Path, ctx: Distributed) -> dict[str, Any] | None:
    """Rank 0 reads the saved state and hands it to every rank (no shared filesystem needed)."""
    state = torch.load(path, map_location="cpu", weights_only=False) if ctx.is_main and path.is_file() else None
    if ctx.world_size > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def build_net(method: Method, config: TrainConfig, num_classes: int, categories: list[str] | None = None) -> nn.Module:
    """The network, initialised from the seed alone (the same on every rank)."""
    if categories is not None:
        method.use_categories(categories)
    torch.manual_seed(config.seed)
    return method.build(num_classes)


class EpochReport:
    """Averages each loss term over an epoch and logs one line: losses, elapsed time and an ETA."""

    def __init__(self, steps_per_epoch: int, total_steps: int, start_step: int) -> None:
        self.steps_per_epoch, self.total_steps, self.start_step = steps_per_epoch, total_steps, start_step
        self.started = time.perf_counter()
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, global_step: int, values: dict[str, float]) -> dict[str, float] | None:
        """Record a step; at an epoch's end (or the run's), log and return the epoch's means."""
        for key, value in values.items():
            self.sums[key] += value
        self.count += 1
        if global_step % self.steps_per_epoch and global_step != self.total_steps:
            return None
        means = {key: total / self.count for key, total in self.sums.items()}
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (global_step - self.start_step) * (self.total_steps - global_step)
        epochs = -(-self.total_steps // self.steps_per_epoch)
        terms = " ".join(f"{k} {v:.3f}" for k, v in means.items() if k not in ("total", "lr"))
        log.info("epoch %d/%d  loss %.4f (%s)  elapsed %s  ETA %s", -(-global_step // self.steps_per_epoch), epochs,
                 means.get("total", float("nan")), terms, format_duration(elapsed), format_duration(eta))
        self.sums.clear()
        self.count = 0
        return means


def _to_batch(item: StepBatch, method: Method, generator: torch.Generator, device: torch.device) -> Batch:
    # uint8 batches travel to the device and are augmented there (a GPU's share of data time stays small)
    sketches, photos = method.augment(item.sketches.to(device), item.photos.to(device), generator)
    # the instance term only where a sketch was drawn from a photo of the batch (never category-level pairs; a
    # sketch paired with another photo of its category still has its own photo as positive if the batch has it)
    link = item.sketch_link
    same_instance = (link[:, None] == item.photo_index[None, :]) & (link[:, None] >= 0)
    return Batch(sketches, photos, item.sketch_labels.to(device), item.photo_labels.to(device),
                 same_instance.to(device))


def train(method: Method, config: TrainConfig, runtime: RuntimeConfig, data: TrainSplit, state_dir: Path, *,
          net: nn.Module | None = None, log_epoch: Callable[[int, dict[str, float]], None] | None = None,
          on_checkpoint: Callable[[int], None] | None = None, progress: bool = True,
          stop_after_steps: int | None = None, ctx: Distributed | None = None) -> tuple[nn.Module, StepTimes]:
    """Train (or resume from ``state_dir``) and return the network and the step-time split.

    ``log_epoch(epoch, means)`` receives each epoch's mean loss terms and learning rate; ``on_checkpoint(step)``
    runs after each saved state; ``stop_after_steps`` ends the run early (smoke runs, tests).
    """
    ctx = ctx or Distributed()
    if config.batch_size % ctx.world_size or config.batch_size // ctx.world_size < 2:
        raise ConfigError(f"batch_size {config.batch_size} must split into {ctx.world_size} equal shards of >= 2")
    seed_everything(config.seed, runtime.num_threads)
    net = (net or build_net(method, config, data.num_classes, data.categories)).to(ctx.device)
    if config.channels_last:  # convolutions follow their weights' layout; inputs need no conversion
        net = net.to(memory_format=torch.channels_last)
    sampler = PairSampler(data, config.batch_size, config.seed, config.sketches_per_category, config.category_pairs)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"{len(data.sketch_paths)} training sketches is fewer than one batch of {config.batch_size}")
    total_steps = config.epochs * sampler.steps_per_epoch
    optimiser = torch.optim.AdamW(method.param_groups(net, config.lr), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: config.lr_final_factor ** (step / max(total_steps, 1)))
    state_path = state_dir / STATE_FILE
    identity = {"method": method.name, "config": asdict(method.config), "train": asdict(config),
                "world_size": ctx.world_size, "data": data.fingerprint}
    global_step = 0
    state = _load_state(state_path, ctx)
    if state is not None:
        for key, value in identity.items():
            if state.get(key) != value:
                raise ConfigError(f"{state_path}: saved by a run with other {key.replace('_', ' ')}; "
                                 "delete it to start afresh")
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        global_step = state["global_step"]
        log.info("resuming %s at step %d of %d", method.name, global_step, total_steps)
    model = net
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    preprocess = method.preprocess()
    cache = None
    started = time.perf_counter()
    if use_cache(data, max(p.image_size for p in preprocess.values()), runtime.cache, runtime.cache_max_mb):
        cache = {"sketch": decode_all(data.sketch_paths, preprocess["sketch"], runtime.workers),
                 "photo": decode_all(data.photo_paths, preprocess["photo"], runtime.workers)}
    load_seconds = time.perf_counter() - started
    batches = StepBatches(sampler, preprocess, ctx.rank, ctx.world_size, cache)
    loader = iter(train_loader(batches, global_step, total_steps, runtime.workers, runtime.prefetch))
    use_amp = config.amp and ctx.device.type == "cuda"
    times = StepTimes(load=load_seconds, global_step=global_step, total_steps=total_steps)
    report = EpochReport(sampler.steps_per_epoch, total_steps, global_step)
    bar = tqdm(total=total_steps, initial=global_step, desc=f"train {method.name}", unit="step",
               disable=not (progress and ctx.is_main))
    net.train()
    while global_step < total_steps:
        started = time.perf_counter()
        item = next(loader)
        # a stream of its own (offset from the sampler's per-epoch seeds) for each step and rank
        generator = torch.Generator().manual_seed((config.seed + 1) * 2_147_483_647 + global_step * ctx.world_size
                                                  + ctx.rank)
        batch = _to_batch(item, method, generator, ctx.device)
        if ctx.device.type == "cuda":  # count the augmentation kernels as data time, not compute
            torch.cuda.synchronize(ctx.device)
        data_done = time.perf_counter()

        with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = method.forward(model, batch)
        terms = method.losses(net, outputs, batch)
        if not torch.isfinite(terms["total"]):  # before the update: the weights stay as they were
            raise FloatingPointError(f"step {global_step + 1}: non-finite loss "
                                     f"{ {k: float(v.detach()) for k, v in terms.items()} }")
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        schedule.step()
        method.after_step(net, outputs, batch, lambda tensor: _gather(tensor, ctx))
        global_step += 1
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        times.data += data_done - started
        times.compute += time.perf_counter() - data_done
        times.steps += 1
        times.global_step = global_step
        values = {name: float(value.detach()) for name, value in terms.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{values['total']:.3f}")
        if ctx.is_main:
            means = report.add(global_step, {**values, "lr": schedule.get_last_lr()[0]})
            if means is not None and log_epoch:
                log_epoch(-(-global_step // sampler.steps_per_epoch), means)
        if ctx.is_main and (global_step % runtime.checkpoint_every == 0 or global_step == total_steps):
            saved = {**identity, "net": net.state_dict(), "optimiser": optimiser.state_dict(),
                     "schedule": schedule.state_dict(), "global_step": global_step}
            atomic_write(state_path, lambda handle: torch.save(saved, handle))
            if on_checkpoint:
                on_checkpoint(global_step)
        if stop_after_steps is not None and global_step >= stop_after_steps:
            break
    bar.close()
    # hand back the standard layout: the returned net then embeds exactly like one loaded from its checkpoint
    net = net.to(memory_format=torch.contiguous_format).eval()
    return net, times
