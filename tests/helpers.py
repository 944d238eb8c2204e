"""Builders of small test data shared across the test layers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from sbir.config import Params, overlay
from sbir.manifest import file_sha256, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS = Params.load(REPO_ROOT / "params.yaml")  # the one home of every value; tests change what they need


def params_section(key: str, **changes: Any) -> dict[str, Any]:
    """A section of the repository's params.yaml (``prepare.openmoji_zs``) with ``changes`` laid over it."""
    return {**PARAMS.section(key), **changes}


def write_params(path: Path, changes: dict[str, Any] | None = None) -> Path:
    """The repository's params.yaml with ``changes`` laid over it (section by section), written to ``path``."""
    path.write_text(yaml.safe_dump(overlay(PARAMS.values, changes or {}), sort_keys=False))
    return path


def config(target: Any, key: str, **changes: Any) -> Any:
    """The typed section ``key`` of the repository's params.yaml built into ``target``, with ``changes``: every
    value checked as a stage would check it."""
    return PARAMS.replaced(key, changes).read(target, key) if changes else PARAMS.read(target, key)
# an open_clip CLIP small enough to build in a blink (untrained): 32 px, a 4 x 4 patch grid, 2 layers
TINY_CLIP_ARCHITECTURE = {
    "embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    "patch_tokens": None}
# each model's params.yaml section sized down (key → values updated into it): every model trains in seconds
SMALL_MODELS: dict[str, dict[str, dict]] = {
    "dsn": {"train": {"epochs": 1, "batch_size": 8},
            "model": {"image_size": 32, "embedding_dim": 32, "projection_dim": 16, "memory_size": 4}},
    "zse": {"train": {"epochs": 1, "batch_size": 8},
            "model": {"image_size": 32, "width": 32, "depth": 1, "heads": 2, "cross_heads": 2, "cross_ff": 32,
                      "relation_width": 16}},
    "clip_prompt": {"train": {"epochs": 1, "batch_size": 8, "sketches_per_category": 2},
                    "model": {"prompts": 1, "shuffle_pairs": 2}},
}
# A fourth method as a user would add it: this one module under models/, the params.yaml section TOY_PARAMS and
# one line of dvc.yaml's models list (TOY_DVC_ENTRY); nothing else is edited.
TOY_METHOD = '''"""A toy method: a small conv net shared by both domains, one linear head each, trained with
classification of the seen categories and a cross-modal InfoNCE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.losses import cross_modal_infonce
from models.method import Batch, Method, weighted_total
from models.registry import register_method
from sbir.config import NonNegativeFloat, PositiveFloat, PositiveInt


@dataclass
class ToyConfig:
    """params.yaml toy.model: types and checks here, values there."""

    image_size: PositiveInt
    width: PositiveInt
    embedding_dim: PositiveInt
    temperature: PositiveFloat
    loss_weights: dict[str, NonNegativeFloat]


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, config.width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(config.width, config.width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({domain: nn.Linear(config.width, config.embedding_dim)
                                    for domain in ("sketch", "photo")})
        self.classifier = nn.Linear(config.embedding_dim, num_classes)

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        return F.normalize(self.heads[domain](self.features(images)), dim=1)

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        sketch, photo = self.embed(sketches, "sketch"), self.embed(photos, "photo")
        return {"sketch": sketch, "photo": photo, "logits": self.classifier(torch.cat([sketch, photo]))}


@register_method("toy")
class Toy(Method):
    config_class = ToyConfig
    network = ToyNet

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        labels = torch.cat([batch.sketch_labels, batch.photo_labels])
        terms = {"classification": F.cross_entropy(outputs["logits"], labels),
                 "instance": cross_modal_infonce(outputs["sketch"], outputs["photo"], batch.same_instance,
                                                 self.config.temperature)}
        return weighted_total(terms, self.config.loss_weights)
'''
TOY_PARAMS = {"train": {**PARAMS.section("dsn.train"), "epochs": 1, "batch_size": 8},
              "model": {"image_size": 32, "width": 16, "embedding_dim": 16, "temperature": 0.1,
                        "loss_weights": {"classification": 1.0, "instance": 1.0}}}
TOY_DVC_ENTRY = {"code": "models/toy.py", "needs": "models/toy.py"}


def make_image_dataset(root: Path, categories: dict[str, str], per_category: int = 3, size: int = 48,
                       seed: int = 0) -> Path:
    """A prepared dataset of distinct random images: ``categories`` maps category → split.

    Each category gets ``per_category`` photos (RGB) and as many sketches (L), sketch i linked to photo i.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for category, split in categories.items():
        for index in range(per_category):
            instance = f"{category}-{index}"
            for domain, mode in (("photo", "RGB"), ("sketch", "L")):
                relative = f"images/{domain}/{category}/{instance}.png"
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                channels = 3 if mode == "RGB" else 1
                pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8).squeeze()
                Image.fromarray(pixels, mode=mode).save(target)
                rows.append({"path": relative, "domain": domain, "category": category, "instance_id": instance,
                             "split": split, "content_hash": file_sha256(target)})
    write_manifest(pd.DataFrame(rows), root, dataset="tiny", image_root=".")
    return root


def run_command(args: list[str], cwd: Path, check: bool = True, timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A command with this environment's tools first on PATH; a failure shows its output."""
    env = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def group_alive(group: int) -> bool:
    """Whether any process of the process group ``group`` is still running."""
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def commit(root: Path, message: str) -> None:
    run_command(["git", "add", "-A"], root)
    run_command(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", message], root)


def copy_project(source: Path, dest: Path, without: tuple[str, ...] = ()) -> Path:
    """A working copy of the pipeline project ``source`` at ``dest`` (git history, workspace, dvc.lock, cache: DVC
    finds up to date there what is up to date in ``source``), made in about a second: files are copied, except
    those of DVC's cache, which are hard-linked (DVC never writes a cache file in place; it adds files and removes
    them whole, so neither project can change the other's). ``without`` names top-level entries left out."""
    cache = str(source / ".dvc" / "cache") + os.sep

    def link_cache_files(src: str, dst: str) -> str:
        if src.startswith(cache):
            try:
                os.link(src, dst)
                return dst
            except OSError:  # another file system: copy
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link_cache_files,
                    ignore=lambda folder, names: [n for n in names if Path(folder) == source and n in without])
    return dest


def make_pipeline_project(root: Path) -> Path:
    """A git + DVC project holding this repository's pipeline (code, dvc.yaml, params), sized down through
    params only and committed, as a clone has it; nothing reproduced yet."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "bentofile.yaml", "requirements.lock",
                 "package.json", "package-lock.json"):
        shutil.copy(REPO_ROOT / name, root / name)
    (root / "node_modules").symlink_to(REPO_ROOT / "node_modules")  # installed by `make setup` (git-ignored)
    for package in ("sbir", "models", "stages", "flows", "serving", "configs"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare"]["openmoji_zs"].update(max_items_per_category=2, sketches_per_item=2, image_size=64)
    # two emoji a category: another artist's set may lack one of a category's two (EmojiOne covers 60 %)
    params["validate"]["min_images_per_category"] = {"train": 1, "test_seen": 1, "test_unseen": 1}
    for section in params["prepare"].values():  # the artwork sets' training rows join training at this size too
        if "min_train_per_category" in section:
            section["min_train_per_category"] = 1
    params["train"]["runtime"].update(num_threads=1)
    for name, sections in SMALL_MODELS.items():
        for key, values in sections.items():
            params[name][key].update(values)
    clip = params["pretrain_clip"]
    clip["architecture"].update(embed_dim=16, vision_cfg={**clip["architecture"]["vision_cfg"], "image_size": 32,
                                                         "width": 32, "layers": 1, "head_width": 16},
                                text_cfg={**clip["architecture"]["text_cfg"], "width": 32, "heads": 2, "layers": 1})
    clip["train"].update(epochs=1, batch_size=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_command(["git", "init", "-q"], root)
    run_command(["dvc", "init", "-q"], root)
    shutil.copy(REPO_ROOT / ".dvc/config", root / ".dvc/config")  # the project's default remote, as cloned
    commit(root, "pipeline")  # DVCLive and `dvc exp` need a commit
    return root
