"""The method contract (docs/architecture.md, "Methods: the contract"): what a training method gives the engine.

A method is one module under ``models/`` that subclasses ``Method`` and registers itself with
``@register_method("<name>")`` (``models.registry``: found by itself, no list to edit). It declares its config
dataclass (its own ``params.yaml`` section, under ``model``), builds its network, computes its losses for a batch,
runs per-step hooks (e.g. a memory-bank update), lists its parameter groups (frozen parts, per-group learning
rates), declares the preprocessing its encoders take, and exports the sketch and photo encoders to the model
interface. The engine (``models.engine``) knows no method.

The base carries what methods share, so a method writes only what is its own:

- ``build``: ``network(config, num_classes)`` (without pretrained weights when a checkpoint replaces them);
- ``preprocess``: [0, 1] pixels at the config's ``image_size`` (the network standardises itself, ``standardise``
  and ``add_statistics`` in ``models.imaging``), sketches ink-normalised when the config's ``sketch_ink`` is set;
- ``embedding_dim``: the config's; ``forward``: ``model(sketches, photos)``;
- ``augment``: the paired flips, affine and colour jitter, and the config's ``style_augment`` share of sketches
  redrawn in other styles;
- ``encoders`` and ``export``: one ``DomainEncoder`` per domain over the shared network's ``embed(images, domain)``;
- helpers: ``weighted_total`` (the loss terms' weighted sum, unknown weights refused) and ``two_speed_groups`` (a
  slow part at a fraction of the learning rate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import nn

from models.data import augment, style_jitter
from models.interface import Preprocess, RetrievalModel, TorchRetrievalModel
from sbir.config import ConfigError


@dataclass
class Batch:
    """One step's training batch on the training device: augmented images in [0, 1], labels, instance links."""

    sketches: torch.Tensor
    photos: torch.Tensor
    sketch_labels: torch.Tensor
    photo_labels: torch.Tensor
    same_instance: torch.Tensor  # (B, B) bool: sketch i was drawn from photo j (real links only)


class DomainEncoder(nn.Module):
    """One domain's encoder over the shared network (what gets exported and served): ``net.embed(images, domain)``."""

    def __init__(self, net: nn.Module, domain: str) -> None:
        super().__init__()
        self.net = net
        self.domain = domain

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images, self.domain)


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """``terms`` with their weighted sum (in the terms' order) under ``total``; a weight naming no term is an error."""
    unknown = set(weights) - set(terms)
    if unknown:
        raise ConfigError(f"loss_weights: unknown loss term(s) {sorted(unknown)}; terms: {sorted(terms)}")
    terms["total"] = sum(weights.get(name, 0.0) * value for name, value in terms.items())
    return terms


def two_speed_groups(net: nn.Module, slow: nn.Module, lr: float, factor: float) -> list[dict[str, Any]]:
    """Optimiser groups: ``slow``'s trainable parameters at ``lr · factor``, then the rest of ``net``'s at ``lr``."""
    slow_ids = {id(p) for p in slow.parameters()}
    return [{"params": [p for p in slow.parameters() if p.requires_grad], "lr": lr * factor},
            {"params": [p for p in net.parameters() if id(p) not in slow_ids and p.requires_grad], "lr": lr}]


class Method(ABC):
    """A training method: network, losses, hooks, parameter groups, preprocessing and export."""

    name: ClassVar[str]  # set by @register_method
    config_class: ClassVar[type]
    network: ClassVar[Callable[[Any, int], nn.Module] | None] = None  # network(config, num_classes): default build

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name}: config must be {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def use_dataset(self, dataset: str) -> None:
        """Called when the method is configured for training on ``dataset`` (``train.dataset``): methods that
        start from something the pipeline built for that dataset (clip_prompt's pretrained CLIP) resolve it here."""

    def use_categories(self, categories: list[str]) -> None:
        """Called before ``build`` with the seen categories' names in label order. Methods that read them (e.g. a
        classifier over the categories' text embeddings) keep them; by default they are not needed."""

    def build(self, num_classes: int, load_pretrained: bool = True) -> nn.Module:
        """The network for ``num_classes`` seen categories, initialised from the torch seed set by the caller.
        ``load_pretrained=False`` skips loading pretrained weights (a checkpoint's weights replace them): the
        config's ``pretrained`` is left out while building, and the network keeps the method's config."""
        if self.network is None:
            raise NotImplementedError(f"{self.name}: set the class attribute 'network' or override build")
        config = self.config
        if not load_pretrained and "pretrained" in {f.name for f in fields(config)}:
            config = replace(config, pretrained=None)
        net = self.network(config, num_classes)
        net.config = self.config  # the weights may come from elsewhere; the config says where they started
        return net

    def preprocess(self) -> dict[str, Preprocess]:
        """Per domain, the uint8 input the network's encoders take (the loader decodes to it). By default inputs
        scaled to [0, 1] (the network standardises itself), sketches ink-normalised if the config's ``sketch_ink``."""
        plain = Preprocess(image_size=self.config.image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        return {"sketch": replace(plain, ink=getattr(self.config, "sketch_ink", False)), "photo": plain}

    @property
    def embedding_dim(self) -> int:
        """Width of the exported embeddings (by default the config's ``embedding_dim``)."""
        return self.config.embedding_dim

    def augment(self, sketches: torch.Tensor, photos: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batches (on the training device) → augmented float images in [0, 1]; draws from ``generator``:
        the flips, the sketches' then the photos' transforms, then the style jitter of the sketches."""
        flip = torch.rand(len(sketches), generator=generator) < 0.5  # the same flip for a sketch and its photo
        sketches = augment(sketches, generator, flip=flip)
        photos = augment(photos, generator, flip=flip, colour=True, max_rotation=5)
        share = getattr(self.config, "style_augment", 0.0)
        if share > 0:
            sketches = style_jitter(sketches, generator, share)
        return sketches, photos

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The training forward pass through ``model`` (the network, or its DDP wrapper)."""
        return model(batch.sketches, batch.photos)

    @abstractmethod
    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every loss term and their weighted sum under ``total`` (``weighted_total``)."""

    def after_step(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch,
                   gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Runs after each optimiser step; ``gather`` concatenates a tensor over every rank."""

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: by default every trainable parameter at the base ``lr``. Frozen parts are left out."""
        return [{"params": [p for p in net.parameters() if p.requires_grad], "lr": lr}]

    def encoders(self, net: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(sketch encoder, photo encoder): modules that share the network's weights, images → embeddings."""
        return DomainEncoder(net, "sketch"), DomainEncoder(net, "photo")

    def exported_class(self) -> type[TorchRetrievalModel] | None:
        """A model class with more capabilities (explanations, re-scoring) that takes the network first, then
        ``TorchRetrievalModel``'s arguments; None: the plain adapter."""
        return None

    def export(self, net: nn.Module, device: str | torch.device = "cpu") -> RetrievalModel:
        """The trained network behind the model interface."""
        model_class = self.exported_class()
        sketch, photo = self.encoders(net)
        arguments = (sketch, photo, self.preprocess(), self.embedding_dim)
        if model_class is None:
            return TorchRetrievalModel(*arguments, name=self.name, device=device)
        return model_class(net, *arguments, name=self.name, device=device)
