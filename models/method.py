"""The method contract (DESIGN.md, "Methods and the engine"): what a training method gives the engine.

A method is one module under ``models/`` that subclasses ``Method`` and registers itself with
``@register_method``. It declares its config dataclass (its own ``params.yaml`` section, under ``model``), builds
its network, computes its losses for a batch, runs per-step hooks (e.g. a memory-bank update), lists its parameter
groups (frozen parts, per-group learning rates), declares the preprocessing its encoders take, and exports the
sketch and photo encoders to the model interface. The engine (``models.engine``) knows no method.

The registry finds built-in methods by module name (``BUILTIN``) and imports a module only when its method is
asked for, so neither side imports the other at load time.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from models.data import augment
from models.interface import Preprocess, RetrievalModel, TorchRetrievalModel

# method name → the module that registers it (imported on first use)
BUILTIN: dict[str, str] = {"dsn": "models.dsn", "clip_prompt": "models.clip.prompt", "zse": "models.zse"}
_METHODS: dict[str, type[Method]] = {}


@dataclass
class Batch:
    """One step's training batch on the training device: augmented images in [0, 1], labels, instance links."""

    sketches: torch.Tensor
    photos: torch.Tensor
    sketch_labels: torch.Tensor
    photo_labels: torch.Tensor
    same_instance: torch.Tensor  # (B, B) bool: sketch i was drawn from photo j (real links only)


class Method(ABC):
    """A training method: network, losses, hooks, parameter groups, preprocessing and export."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name}: config must be {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def use_categories(self, categories: list[str]) -> None:
        """Called before ``build`` with the seen categories' names in label order. Methods that read them (e.g. a
        classifier over the categories' text embeddings) keep them; by default they are not needed."""

    @abstractmethod
    def build(self, num_classes: int, load_pretrained: bool = True) -> nn.Module:
        """The network for ``num_classes`` seen categories, initialised from the torch seed set by the caller.
        ``load_pretrained=False`` skips loading pretrained weights (a checkpoint's weights replace them)."""

    @abstractmethod
    def preprocess(self) -> dict[str, Preprocess]:
        """Per domain, the uint8 input the network's encoders take (the loader decodes to it)."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width of the exported embeddings."""

    def augment(self, sketches: torch.Tensor, photos: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batches (on the training device) → augmented float images in [0, 1]; draws from ``generator``."""
        flip = torch.rand(len(sketches), generator=generator) < 0.5  # the same flip for a sketch and its photo
        return (augment(sketches, generator, flip=flip),
                augment(photos, generator, flip=flip, colour=True, max_rotation=5))

    @abstractmethod
    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The training forward pass through ``model`` (the network, or its DDP wrapper)."""

    @abstractmethod
    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Every loss term and their weighted sum under ``total``."""

    def after_step(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch,
                   gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Runs after each optimiser step; ``gather`` concatenates a tensor over every rank."""

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: by default every trainable parameter at the base ``lr``. Frozen parts are left out."""
        return [{"params": [p for p in net.parameters() if p.requires_grad], "lr": lr}]

    @abstractmethod
    def encoders(self, net: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(sketch encoder, photo encoder): modules that share the network's weights, images → embeddings."""

    def export(self, net: nn.Module, device: str | torch.device = "cpu") -> RetrievalModel:
        """The trained network behind the model interface."""
        sketch, photo = self.encoders(net)
        return TorchRetrievalModel(sketch, photo, self.preprocess(), self.embedding_dim, name=self.name,
                                   device=device)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method '{cls.name}' is registered twice")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(set(BUILTIN) | set(_METHODS))


def get_method(name: str) -> type[Method]:
    """The registered method class (importing its built-in module on first use)."""
    if name not in _METHODS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _METHODS:
        raise KeyError(f"unknown method '{name}'; available: {available_methods()}")
    return _METHODS[name]
