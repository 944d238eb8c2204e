"""Model folders, checkpoint format v2: what every stage after training loads, for methods and baselines alike.

A folder holds ``config.json`` and, where the model has weights, ``model.safetensors`` (every tensor once: the
sketch and photo encoders are rebuilt from one network and share its weights). ``config.json``:

- ``schema_version`` (2; v1 method folders hold the methods before they followed their papers, and are refused
  with what to do; v1 baseline folders are the same as v2), ``kind`` (``method`` | ``baseline``) and ``method`` (its registered name);
- ``config``: the method's config (its ``params.yaml`` section), ``num_classes``, ``embedding_dim``;
- ``preprocess``: per domain, the image size and channel statistics its encoder takes;
- ``dataset``, ``train_categories`` and ``data_fingerprint`` (the manifest rows it trained on), ``train``
  (the optimisation settings), so a registry can tell what a model saw.

Files are written atomically, weights first: ``config.json`` appearing last marks a complete folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.interface import Preprocess, RetrievalModel, TorchRetrievalModel
from models.method import Method
from models.registry import available, create_model
from sbir import paths
from sbir.config import ConfigError
from sbir.io import atomic_write_bytes, atomic_write_json
from sbir.errors import ModelError

SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
METHOD_SCHEMAS = (2,)  # the methods' configs and weights changed with v2 (DSN, ZSE-SBIR, CLIP as their papers)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ModelError):
    """A model folder that cannot be loaded: says what it holds and what is supported."""


def _write_weights(state: dict[str, torch.Tensor], folder: Path) -> None:
    from safetensors.torch import save

    tensors, seen = {}, set()
    for key, value in state.items():
        tensor = value.detach().contiguous().cpu()
        # safetensors refuses tensors that share memory (tied weights, e.g. DSN's one head for both domains):
        # each name gets its own copy, and loading ties them again (both names load into the same parameter)
        shared = tensor.numel() and tensor.untyped_storage().data_ptr() in seen
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor.clone() if shared else tensor
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))


def save_method(folder: str | Path, method: Method, net: nn.Module, facts: dict[str, Any]) -> Path:
    """A trained method's folder; ``facts``: dataset, train_categories, data_fingerprint, train settings."""
    folder = Path(folder)
    _write_weights(net.state_dict(), folder)
    document = {"schema_version": SCHEMA_VERSION, "kind": "method", "method": method.name,
                "config": asdict(method.config), "num_classes": len(facts.get("train_categories", [])),
                "embedding_dim": method.embedding_dim,
                "preprocess": {domain: p.to_dict() for domain, p in method.preprocess().items()}, **facts}
    atomic_write_json(folder / CONFIG_FILE, document)
    return folder


def save_baseline(folder: str | Path, name: str, params: dict[str, Any], model: RetrievalModel) -> Path:
    """A baseline's folder: its params and, for torch baselines, its (random) weights."""
    folder = Path(folder)
    if isinstance(model, TorchRetrievalModel):
        _write_weights(model.state_dict(), folder)
    document = {"schema_version": SCHEMA_VERSION, "kind": "baseline", "method": name, "config": params,
                "embedding_dim": model.embedding_dim,
                "preprocess": {d: model.preprocess(d).to_dict() for d in ("sketch", "photo")}}
    atomic_write_json(folder / CONFIG_FILE, document)
    return folder


def model_folder(reference: str) -> Path:
    """A model name (its folder under artifacts/checkpoints) or a folder path."""
    path = Path(reference)
    return path if (path / CONFIG_FILE).is_file() else paths.checkpoint_dir(reference)


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a model folder, its schema and method checked."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a model folder (no {CONFIG_FILE})")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    version = document.get("schema_version")
    if version not in SUPPORTED_SCHEMAS:
        raise CheckpointError(f"{path}: checkpoint schema version {version!r} is not supported (supported: "
                              f"{list(SUPPORTED_SCHEMAS)}); re-train, or load it with the version that wrote it")
    name, kind = document.get("method"), document.get("kind")
    if kind not in ("method", "baseline"):
        raise CheckpointError(f"{path}: kind {kind!r} is not 'method' or 'baseline'")
    if kind == "method" and version not in METHOD_SCHEMAS:
        raise CheckpointError(f"{path}: a {name} model of checkpoint schema {version}, written before the methods "
                              f"followed their papers (schema {SCHEMA_VERSION}); its config and weights no longer fit. "
                              f"Re-train it (dvc repro train@{name}); a registered champion of that kind is replaced "
                              "by promoting a newer registration (zssbir promote <version>)")
    known = available(kind)
    if name not in known:
        raise CheckpointError(f"{path}: unknown {kind} {name!r}; supported: {known}")
    return document


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    return load_file(str(path))


def load_network(folder: str | Path) -> tuple[Method, nn.Module, dict[str, Any]]:
    """A trained method's network from its folder (no pretrained download: every weight is here)."""
    folder = Path(folder)
    document = read_config(folder)
    if document["kind"] != "method":
        raise CheckpointError(f"{folder}: holds the baseline '{document['method']}', not a trained network")
    try:
        method = create_model(document["method"], document["config"], f"{folder / CONFIG_FILE}: config", "method")
    except ConfigError as error:
        raise CheckpointError(str(error)) from error
    net = method.build(document["num_classes"], load_pretrained=False)
    net.load_state_dict(_load_weights(folder))
    return method, net.eval(), document


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> RetrievalModel:
    """Any model folder behind the model interface, named after the folder."""
    folder = Path(folder)
    document = read_config(folder)
    if document["kind"] == "method":
        method, net, _ = load_network(folder)
        model = method.export(net, device)
    else:
        model = create_model(document["method"], document["config"], f"{folder / CONFIG_FILE}: config", "baseline")
        if isinstance(model, TorchRetrievalModel):
            model.load_state_dict(_load_weights(folder))
    model.name = folder.name
    return model


def declared_preprocess(folder: str | Path) -> dict[str, Preprocess]:
    """The preprocessing a folder's encoders declare, without building the model."""
    return {domain: Preprocess.from_dict(values) for domain, values in read_config(folder)["preprocess"].items()}


__all__ = ["CheckpointError", "SCHEMA_VERSION", "declared_preprocess", "load_model", "load_network", "read_config",
           "save_baseline", "save_method"]
