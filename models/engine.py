"""The training engine: seeded and deterministic on CPU, mixed precision on CUDA, data-parallel under torchrun,
atomic checkpoints and exact resume.

Exact resume: the state saved every ``checkpoint_every`` steps holds the weights (memory bank included), the
optimiser and the position (epoch, step). Batches and augmentations are drawn from generators seeded by
(seed, epoch, step), so a resumed run replays exactly what an uninterrupted run would have done next.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from models.data import PairSampler, PairedImages, augment
from models.dsn import DSNConfig, DSNNet, dsn_losses

STATE_FILE = "state.pt"


@dataclass
class TrainConfig:
    """Optimisation settings (``params.yaml`` ``train``, less the ``model`` subsection)."""

    epochs: int = 10
    batch_size: int = 32
    sketches_per_category: int = 1  # > 1: batches of runs of that many same-category sketches (hard negatives)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    lr_final_factor: float = 0.01  # DSN-style decay: lr · factor^(progress)
    seed: int = 0
    num_threads: int = 2
    checkpoint_every: int = 50  # steps
    amp: bool = True  # bf16 autocast on CUDA only
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and on GPU tensor cores
    model: DSNConfig = field(default_factory=DSNConfig)


@dataclass
class StepTimes:
    """Where a step's wall time goes: preparing the batch (data) and the forward/backward pass (compute);
    and how far the run got (``global_step`` of ``total_steps``, counting steps of earlier, resumed runs)."""

    data: float = 0.0
    compute: float = 0.0
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


def _seed_everything(seed: int, threads: int) -> None:
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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _gather(tensor: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    if ctx.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def data_fingerprint(data: PairedImages) -> str:
    """Identifies the training data a state belongs to (labels, links, categories, image shapes)."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in (data.sketch_labels, data.photo_labels, data.sketch_to_photo):
        digest.update(tensor.numpy().tobytes())
    digest.update(repr((data.categories, tuple(data.sketches.shape), tuple(data.photos.shape))).encode())
    return digest.hexdigest()


def _load_state(path: Path, ctx: Distributed) -> dict[str, Any] | None:
    """Rank 0 reads the saved state and hands it to every rank (no shared filesystem needed)."""
    state = torch.load(path, map_location="cpu", weights_only=False) if ctx.is_main and path.is_file() else None
    if ctx.world_size > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def build_net(config: TrainConfig, num_classes: int) -> DSNNet:
    """The network, initialised from the seed alone (the same on every rank)."""
    torch.manual_seed(config.seed)
    return DSNNet(config.model, num_classes)


def train(config: TrainConfig, data: PairedImages, state_dir: Path, *, net: DSNNet | None = None,
          log: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
          stop_after_steps: int | None = None, ctx: Distributed | None = None) -> tuple[DSNNet, StepTimes]:
    """Train (or resume from ``state_dir``) and return the network and the step-time split.

    ``stop_after_steps`` ends the run early after that many global steps (used to interrupt runs in tests).
    """
    ctx = ctx or Distributed()
    if config.batch_size % ctx.world_size or config.batch_size // ctx.world_size < 2:
        raise ValueError(f"batch_size {config.batch_size} must split into {ctx.world_size} equal shards of >= 2")
    _seed_everything(config.seed, config.num_threads)
    net = (net or build_net(config, data.num_classes)).to(ctx.device)
    if config.channels_last:  # convolutions follow their weights' layout; inputs need no conversion
        net = net.to(memory_format=torch.channels_last)
    sampler = PairSampler(data, config.batch_size, config.seed, config.sketches_per_category)
    if sampler.steps_per_epoch == 0:
        raise ValueError(f"{len(data.sketches)} training sketches is fewer than one batch of {config.batch_size}")
    total_steps = config.epochs * sampler.steps_per_epoch
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: config.lr_final_factor ** (step / max(total_steps, 1)))
    global_step = 0
    state_path = state_dir / STATE_FILE
    identity = {"config": asdict(config), "world_size": ctx.world_size, "data": data_fingerprint(data)}
    state = _load_state(state_path, ctx)
    if state is not None:
        for key, value in identity.items():
            if state.get(key) != value:
                raise ValueError(f"{state_path}: saved by a run with other {key.replace('_', ' ')}; "
                                 "delete it to start afresh")
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        global_step = state["global_step"]
    model = net
    if ctx.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device] if ctx.device.type == "cuda"
                                                          else None)
    use_amp = config.amp and ctx.device.type == "cuda"
    times = StepTimes(global_step=global_step, total_steps=total_steps)
    bar = tqdm(total=total_steps, initial=global_step, desc="train", unit="step", disable=not (progress and ctx.is_main))
    net.train()
    while global_step < total_steps:
        epoch, step = divmod(global_step, sampler.steps_per_epoch)
        started = time.perf_counter()
        sketch_idx, photo_idx, linked = sampler.batch(epoch, step)
        shard = slice(ctx.rank * len(sketch_idx) // ctx.world_size, (ctx.rank + 1) * len(sketch_idx) // ctx.world_size)
        sketch_idx, photo_idx, linked = sketch_idx[shard], photo_idx[shard], linked[shard]
        # a stream of its own (offset from the sampler's per-epoch seeds) for each step and rank
        generator = torch.Generator().manual_seed((config.seed + 1) * 2_147_483_647 + global_step * ctx.world_size
                                                  + ctx.rank)
        flip = torch.rand(len(sketch_idx), generator=generator) < 0.5  # the same flip for a sketch and its photo
        # uint8 batches travel to the device and are augmented there (a GPU's share of data time stays small)
        sketches = augment(data.sketches[sketch_idx].to(ctx.device), generator, flip=flip)
        photos = augment(data.photos[photo_idx].to(ctx.device), generator, flip=flip, colour=True, max_rotation=5)
        sketch_labels = data.sketch_labels[sketch_idx].to(ctx.device)
        photo_labels = data.photo_labels[photo_idx].to(ctx.device)
        # the instance term only where a sketch was drawn from its photo (never for category-level pairs)
        same_instance = ((photo_idx[:, None] == photo_idx[None, :]) & linked[:, None] & linked[None, :]).to(ctx.device)
        if ctx.device.type == "cuda":  # count the augmentation kernels as data time, not compute
            torch.cuda.synchronize(ctx.device)
        data_done = time.perf_counter()

        with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(sketches, photos)
        terms = dsn_losses(net, out, sketch_labels, photo_labels, same_instance)
        if not torch.isfinite(terms["total"]):  # before the update: the weights stay as they were
            raise FloatingPointError(f"step {global_step + 1}: non-finite loss "
                                     f"{ {k: float(v.detach()) for k, v in terms.items()} }")
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        schedule.step()
        net.memory.update(_gather(out["sketch"].detach().float(), ctx), _gather(sketch_labels, ctx))
        global_step += 1
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        times.data += data_done - started
        times.compute += time.perf_counter() - data_done
        times.steps += 1
        times.global_step = global_step
        values = {name: float(value.detach()) for name, value in terms.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{values['total']:.3f}", epoch=epoch)
        if log and ctx.is_main:
            log({"step": global_step, "epoch": epoch, "lr": schedule.get_last_lr()[0], **values})
        if ctx.is_main and (global_step % config.checkpoint_every == 0 or global_step == total_steps):
            _atomic_torch_save({**identity, "net": net.state_dict(), "optimiser": optimiser.state_dict(),
                                "schedule": schedule.state_dict(), "global_step": global_step}, state_path)
        if stop_after_steps is not None and global_step >= stop_after_steps:
            break
    bar.close()
    # hand back the standard layout: the returned net then embeds exactly like one loaded from its checkpoint
    net = net.to(memory_format=torch.contiguous_format).eval()
    return net, times
