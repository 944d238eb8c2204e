"""Baselines by name: models with nothing to learn, built from their params section.

Trained methods live in ``models.method``; both kinds end up as model folders (``models.checkpoint``) that
everything downstream loads the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from models.interface import RetrievalModel

BUILTIN: dict[str, str] = {name: "models.baselines" for name in ("baseline_random", "baseline_imagenet", "baseline_hog")}
_BASELINES: dict[str, Callable[..., RetrievalModel]] = {}


def register_baseline(name: str) -> Callable:
    """Decorator for a typed factory (class or function) returning a RetrievalModel."""

    def decorate(factory: Callable[..., RetrievalModel]) -> Callable[..., RetrievalModel]:
        if name in _BASELINES and _BASELINES[name] is not factory:
            raise ValueError(f"baseline '{name}' is registered twice")
        _BASELINES[name] = factory
        return factory

    return decorate


def available_baselines() -> list[str]:
    return sorted(set(BUILTIN) | set(_BASELINES))


def baseline_factory(name: str) -> Callable[..., RetrievalModel]:
    if name not in _BASELINES and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _BASELINES:
        raise KeyError(f"unknown baseline '{name}'; available: {available_baselines()}")
    return _BASELINES[name]


def is_baseline(name: str) -> bool:
    return name in BUILTIN or name in _BASELINES


def create_baseline(name: str, params: dict[str, Any] | None = None, where: str | None = None) -> RetrievalModel:
    """Build a baseline from its params section, type-checked like every other section."""
    from sbir.config import build

    model = build(baseline_factory(name), params or {}, where or name)
    model.name = name
    return model
