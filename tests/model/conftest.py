"""Model-test fixtures shared by the method, baseline and contract tests: a six-category training split and a
tiny untrained CLIP folder, each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_CLIP_ARCHITECTURE

from models.data import TrainSplit, read_split
from sbir.manifest import read_manifest, write_manifest


@pytest.fixture(scope="session")
def data(tiny_openmoji: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainSplit:
    """Six training categories of the tiny OpenMoji-ZS: 2 emoji each, a photo and 2 sketches per emoji (12 photos,
    24 sketches; a manifest of its own). Shared: tests derive variants with ``dataclasses.replace``."""
    manifest = read_manifest(tiny_openmoji)
    frame = manifest.frame
    keep = sorted(frame.loc[frame["split"] == "train", "category"].unique())[:6]
    out = tmp_path_factory.mktemp("six")
    write_manifest(frame[frame["category"].isin(keep)], out, dataset="six", image_root=manifest.image_root)
    return read_split(read_manifest(out), "train")


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (untrained) CLIP saved as the pretrain_clip stage saves one."""
    from models.clip.tower import build_clip, save_clip_folder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip")
    return save_clip_folder(folder, build_clip(TINY_CLIP_ARCHITECTURE), TINY_CLIP_ARCHITECTURE,
                            {"dataset": "six", "train_categories": []})
