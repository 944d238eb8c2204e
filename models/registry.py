"""Model registry: build a retrieval model by name, or load a trained one from its checkpoint folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.interface import RetrievalModel

_MODELS: dict[str, Callable[..., RetrievalModel]] = {}
_LOADERS: dict[str, Callable[[Path], RetrievalModel]] = {}


def register_model(name: str) -> Callable:
    """Decorator for a factory (class or function) returning a RetrievalModel."""

    def decorate(factory: Callable[..., RetrievalModel]) -> Callable[..., RetrievalModel]:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        _MODELS[name] = factory
        return factory

    return decorate


def register_loader(method: str) -> Callable:
    """Decorator for a function loading a trained ``method`` from its checkpoint folder."""

    def decorate(loader: Callable[[Path], RetrievalModel]) -> Callable[[Path], RetrievalModel]:
        _LOADERS[method] = loader
        return loader

    return decorate


def available_models() -> list[str]:
    _import_builtin()
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> RetrievalModel:
    """Build a registered model (baselines, untrained methods)."""
    _import_builtin()
    if name not in _MODELS:
        raise KeyError(f"unknown model '{name}'; registered: {sorted(_MODELS)}")
    model = _MODELS[name](**kwargs)
    model.name = name
    return model


def load_model(checkpoint_dir: str | Path) -> RetrievalModel:
    """Load a trained model from a folder holding ``config.json`` and weights, whatever its method."""
    import json

    _import_builtin()
    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{checkpoint_dir}: not a checkpoint folder (no config.json)")
    method = json.loads(config_path.read_text()).get("method")
    if method not in _LOADERS:
        raise KeyError(f"{config_path}: unknown method '{method}'; known: {sorted(_LOADERS)}")
    return _LOADERS[method](checkpoint_dir)


def _import_builtin() -> None:
    """Registration happens on import of the modules that define models."""
    from models import baselines, dsn  # noqa: F401
