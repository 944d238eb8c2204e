"""Contrastive image–text pretraining of a small CLIP on a dataset's train split (stage ``pretrain_clip``).

Each step draws ``batch_size`` photos (every photo once per epoch) and, for each, one sketch drawn from it (or,
without instance links, one of its category): ``2 · batch_size`` images, each with its own caption (a photo's
caption for the photo, a drawing's for the sketch), under CLIP's symmetric contrastive loss. Images are the
uint8 cache of ``models.data`` (``decode_all``), augmented on the fly (``models.data.augment``). Draws are pure
functions of (seed, epoch, step), so a run is deterministic on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass


import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import OPENAI_MEAN, OPENAI_STD
from models.clip.tower import BackbonePatchTokens, contrastive_loss
from models.data import augment
from sbir.config import ConfigError, Count, NonNegativeFloat, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Optimisation of the small CLIP (``params.yaml`` ``pretrain_clip.train``)."""

    epochs: PositiveInt
    batch_size: PositiveInt  # photos per step, each with one of its sketches: 2 × batch_size image–caption pairs
    lr: PositiveFloat
    weight_decay: NonNegativeFloat  # on matrices only (open_clip's rule)
    warmup_steps: Count  # linear warm-up, then cosine decay to 0
    stem_lr_factor: NonNegativeFloat  # the pretrained patch-token CNN's lr = lr × factor (0: frozen); BatchNorms frozen
    seed: int


@dataclass
class CaptionedImages:
    """The train split as the pretraining loop reads it: uint8 images, token ids and caption ids per image."""

    photos: torch.Tensor  # (Np, 3, S, S) uint8
    sketches: torch.Tensor  # (Ns, 3, S, S) uint8
    photo_tokens: torch.Tensor  # (Np, context) int64
    sketch_tokens: torch.Tensor  # (Ns, context) int64
    photo_captions: torch.Tensor  # (Np,) int64: same id = same caption text (in either domain)
    sketch_captions: torch.Tensor  # (Ns,) int64
    sketches_of_photo: list[torch.Tensor]  # per photo, the sketches it is paired with


def _decays(name: str, parameter: nn.Parameter) -> bool:
    """open_clip's rule: no weight decay on gains, biases, embeddings' scales and the logit scale."""
    return parameter.ndim >= 2 and not any(key in name for key in ("bn", "ln", "bias", "logit_scale"))


def parameter_groups(model: nn.Module, config: PretrainConfig) -> list[dict]:
    """Everything at ``lr`` (weight decay on matrices only); the pretrained patch-token CNN at
    ``lr × stem_lr_factor``, frozen at 0."""
    stem = model.visual.conv1.features if isinstance(model.visual.conv1, BackbonePatchTokens) else None
    stem_ids = {id(p) for p in stem.parameters()} if stem is not None else set()
    if stem is not None and config.stem_lr_factor == 0:
        stem.requires_grad_(False)
    rest = [(n, p) for n, p in model.named_parameters() if id(p) not in stem_ids and p.requires_grad]
    groups = [{"params": [p for n, p in rest if _decays(n, p)], "lr": config.lr},
              {"params": [p for n, p in rest if not _decays(n, p)], "lr": config.lr, "weight_decay": 0.0}]
    if stem is not None and config.stem_lr_factor > 0:
        groups.append({"params": list(stem.parameters()), "lr": config.lr * config.stem_lr_factor})
    return groups


def _schedule(config: PretrainConfig, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _step_indices(data: CaptionedImages, config: PretrainConfig, epoch: int,
                  step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Photo and sketch indices of one step (a pure function of seed, epoch and step)."""
    order = torch.randperm(len(data.photos), generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
    photos = order[step * config.batch_size:(step + 1) * config.batch_size]
    pick = torch.Generator().manual_seed(config.seed * 7919 + epoch * 104_729 + step)
    sketches = torch.stack([pool[torch.randint(len(pool), (1,), generator=pick)][0]
                            for pool in (data.sketches_of_photo[i] for i in photos.tolist())])
    return photos, sketches


def standardise(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] → CLIP's channel statistics."""
    mean = torch.tensor(OPENAI_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def step_loss(model: nn.Module, data: CaptionedImages, photos: torch.Tensor, sketches: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """The contrastive loss of one step's augmented images and their captions."""
    flip = torch.rand(len(photos), generator=generator) < 0.5
    photo_images = augment(data.photos[photos], generator, flip=flip, colour=True, max_rotation=5)
    sketch_images = augment(data.sketches[sketches], generator, flip=flip)
    images = standardise(torch.cat([photo_images, sketch_images]))
    tokens = torch.cat([data.photo_tokens[photos], data.sketch_tokens[sketches]])
    # ids index the distinct caption texts of both domains: a sketch captioned like its photo is its positive
    captions = torch.cat([data.photo_captions[photos], data.sketch_captions[sketches]])
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    return contrastive_loss(image_features, text_features, model.logit_scale.exp().clamp(max=100), captions)


def pretrain(model: nn.Module, data: CaptionedImages, config: PretrainConfig, *,
             log_epoch: Callable[[int, dict[str, float]], None] | None = None,
             stop_after_steps: int | None = None) -> dict[str, float | list[float]]:
    """Train ``model`` in place; returns the per-epoch mean losses and the wall time."""
    steps_per_epoch = len(data.photos) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"pretrain_clip.train.batch_size: {config.batch_size} is more than the "
                          f"{len(data.photos)} training photos")
    total = config.epochs * steps_per_epoch
    optimiser = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(config, total))
    history: list[float] = []
    started = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(config.epochs):
        losses = []
        for index in range(steps_per_epoch):
            photos, sketches = _step_indices(data, config, epoch, index)
            generator = torch.Generator().manual_seed((config.seed + 1) * 2_147_483_647 + step)
            loss = step_loss(model, data, photos, sketches, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain_clip step {step + 1}: non-finite loss {float(loss)}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if stop_after_steps is not None and step >= stop_after_steps:
                break
        history.append(sum(losses) / len(losses))
        log.info("pretrain_clip epoch %d/%d  loss %.4f  logit scale %.1f  %.0f s", epoch + 1, config.epochs,
                 history[-1], float(model.logit_scale.detach().exp()), time.perf_counter() - started)
        if log_epoch:
            log_epoch(epoch + 1, {"loss": history[-1]})
        if stop_after_steps is not None and step >= stop_after_steps:
            break
    model.eval()
    return {"epoch_loss": history, "steps": step, "seconds": round(time.perf_counter() - started, 1)}
