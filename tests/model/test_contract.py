"""The model contract, checked on every registered model as timm and open_clip test every model they register.

Models come from the registry, so a new method or baseline is tested here without editing this file: each is
configured by its ``params.yaml`` section, sized down (``helpers.SMALL_MODELS``, through ``dataclasses.replace``)
and pointed at test inputs (a config's ``clip`` at a tiny CLIP). Every model: unit embeddings of its declared
width, identical embeddings after a save and a load. Every method also: finite losses that fall over a few
optimiser steps on a fixed tiny batch, and every trainable parameter in exactly one optimiser group."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import PARAMS, REPO_ROOT, SMALL_MODELS, config
from torch import nn

from models.checkpoint import load_model, save_baseline, save_method
from models.data import TrainSplit, decode_all
from models.engine import TrainConfig, build_net
from models.interface import DOMAINS, RetrievalModel
from models.method import Batch, Method
from models.registry import available, create_model, lookup

METHODS = available("method")
MODELS = available()
STEPS, LR = 5, 3e-3


@dataclass
class Built:
    """A registered model ready to use: the exported model and, for a method, the method and its network."""

    model: RetrievalModel
    method: Method | None = None
    net: nn.Module | None = None
    params: dict | None = None  # a baseline's arguments

    def save(self, folder: Path, data: TrainSplit) -> Path:
        if self.method is None:
            return save_baseline(folder, self.model.name, self.params or {}, self.model)
        return save_method(folder, self.method, self.net, {"dataset": "six", "train_categories": data.categories})


def small_method(name: str, clip_folder: Path) -> Method:
    """The method as params.yaml configures it, sized down and pointed at the test inputs."""
    method = create_model(name, PARAMS.section(f"{name}.model"), f"params.yaml: {name}.model", "method")
    changes = dict(SMALL_MODELS.get(name, {}).get("model", {}))
    if "clip" in {f.name for f in fields(method.config)}:
        changes["clip"] = str(clip_folder)
    return type(method)(replace(method.config, **changes))


def build(name: str, data: TrainSplit, clip_folder: Path) -> Built:
    if name not in METHODS:
        params = PARAMS.section(name)
        return Built(create_model(name, params, f"params.yaml: {name}", "baseline"), params=params)
    method = small_method(name, clip_folder)
    net = build_net(method, config(TrainConfig, f"{name}.train", seed=0), data.num_classes, data.categories)
    return Built(method.export(net.eval()), method, net)


def pixels(model: RetrievalModel, data: TrainSplit, domain: str) -> torch.Tensor:
    """Four uint8 images of ``domain`` as the model's preprocessing decodes them."""
    paths = data.sketch_paths[:4] if domain == "sketch" else data.photo_paths[:4]
    return decode_all(paths, model.preprocess(domain), workers=0)


def fixed_batch(method: Method, data: TrainSplit) -> Batch:
    """Eight linked pairs, two emoji from each of four categories, augmented once (a fixed generator)."""
    rows = [i for c in range(4) for i in torch.nonzero(data.sketch_labels == c).flatten().tolist()[::2]][:8]
    sketch_idx = torch.tensor(rows)
    photo_idx = data.sketch_to_photo[sketch_idx]
    preprocess = method.preprocess()
    sketches = decode_all([data.sketch_paths[i] for i in rows], preprocess["sketch"], workers=0)
    photos = decode_all([data.photo_paths[i] for i in photo_idx.tolist()], preprocess["photo"], workers=0)
    sketches, photos = method.augment(sketches, photos, torch.Generator().manual_seed(0))
    return Batch(sketches, photos, data.sketch_labels[sketch_idx], data.photo_labels[photo_idx],
                 photo_idx[:, None] == photo_idx[None, :])


@pytest.mark.parametrize("name", MODELS)
def test_embeddings_are_unit_vectors_of_the_declared_width(name: str, data: TrainSplit, clip_folder: Path) -> None:
    built = build(name, data, clip_folder)
    if built.method is not None:
        assert built.model.embedding_dim == built.method.embedding_dim
    for domain in DOMAINS:
        images = pixels(built.model, data, domain)
        vectors = built.model.encode_batch(images, domain)
        assert vectors.shape == (4, built.model.embedding_dim) and np.isfinite(vectors).all()
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        if built.method is not None:  # the network's own embeddings are unit (its losses assume it)
            encoder = dict(zip(DOMAINS, built.method.encoders(built.net)))[domain]
            with torch.no_grad():
                raw = encoder(built.model.preprocess(domain).normalize(images))
            assert torch.allclose(raw.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_give_identical_embeddings(name: str, data: TrainSplit, clip_folder: Path,
                                                 tmp_path: Path) -> None:
    built = build(name, data, clip_folder)
    loaded = load_model(built.save(tmp_path / name, data))
    assert loaded.embedding_dim == built.model.embedding_dim
    for domain in DOMAINS:
        assert loaded.preprocess(domain) == built.model.preprocess(domain)
        images = pixels(built.model, data, domain)
        assert np.array_equal(loaded.encode_batch(images, domain), built.model.encode_batch(images, domain))


@pytest.mark.parametrize("name", METHODS)
def test_losses_are_finite_and_fall_on_a_fixed_batch(name: str, data: TrainSplit, clip_folder: Path) -> None:
    method = small_method(name, clip_folder)
    net = build_net(method, config(TrainConfig, f"{name}.train", seed=0), data.num_classes, data.categories).train()
    batch = fixed_batch(method, data)
    optimiser = torch.optim.AdamW(method.param_groups(net, LR), lr=LR, weight_decay=0.0)
    totals = []
    for _ in range(STEPS):
        outputs = method.forward(net, batch)
        terms = method.losses(net, outputs, batch)
        assert "total" in terms and all(torch.isfinite(value).all() for value in terms.values()), terms
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        method.after_step(net, outputs, batch, lambda tensor: tensor)
        totals.append(float(terms["total"].detach()))
    assert totals[-1] < totals[0], totals


@pytest.mark.parametrize("name", METHODS)
def test_every_trainable_parameter_is_in_exactly_one_group(name: str, data: TrainSplit, clip_folder: Path) -> None:
    method = small_method(name, clip_folder)
    net = build_net(method, config(TrainConfig, f"{name}.train", seed=0), data.num_classes, data.categories)
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    # the config as given, and with each per-part learning-rate factor changed (a second group may appear)
    factors = [f.name for f in fields(method.config) if f.name.endswith("_lr_factor")]
    for variant in [method.config, *(replace(method.config, **{factor: 0.5}) for factor in factors)]:
        groups = type(method)(variant).param_groups(net, 0.01)
        grouped = [id(p) for group in groups for p in group["params"]]
        assert len(grouped) == len(set(grouped)), "a parameter in two groups"
        assert set(grouped) == trainable, "a trainable parameter in no group, or a frozen one in a group"
        assert all(group["lr"] > 0 for group in groups)


@pytest.mark.parametrize("name", MODELS)
def test_each_model_is_a_params_section_and_a_dvc_entry(name: str) -> None:
    """Adding a model = its module, its params.yaml section and one line of dvc.yaml's ``models``."""
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    models = next(item["models"] for item in pipeline["vars"] if "models" in item)
    assert name in PARAMS.values and name in models
    entry = models[name]
    assert (REPO_ROOT / entry["code"]).exists()
    assert entry["needs"].startswith("artifacts/") or (REPO_ROOT / entry["needs"]).exists()  # or a stage's output
    if name in METHODS:
        assert lookup(name).name == name and set(PARAMS.section(name)) <= {"train", "model"}
