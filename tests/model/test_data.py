"""Streaming data: step batches are pure functions of (seed, step, rank), loaders keep order and bound memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.data import (PairSampler, StepBatches, decode_all, image_loader, read_split, train_loader, use_cache)
from models.interface import Preprocess
from sbir.manifest import read_manifest

PRE = Preprocess(image_size=24, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def split(tiny_openmoji: Path):
    return read_split(read_manifest(tiny_openmoji), "train")


def test_loader_decodes_in_order_like_one_by_one(split) -> None:
    paths = split.photo_paths[:10]
    one_by_one = decode_all(paths, PRE, workers=0)
    batches = list(image_loader(paths, PRE, batch_size=4, workers=2, prefetch=1))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), one_by_one) and one_by_one.dtype == torch.uint8
    assert one_by_one.shape == (10, 3, 24, 24)


def test_step_batches_are_the_same_streamed_cached_and_from_any_start(split) -> None:
    sampler = PairSampler(split, batch_size=8, seed=3)
    pre = {"sketch": PRE, "photo": PRE}
    cache = {"sketch": decode_all(split.sketch_paths, PRE, 0), "photo": decode_all(split.photo_paths, PRE, 0)}
    streamed = list(train_loader(StepBatches(sampler, pre), 0, 6, workers=2, prefetch=1))
    cached = list(train_loader(StepBatches(sampler, pre, cache=cache), 0, 6, workers=2))
    resumed = list(train_loader(StepBatches(sampler, pre), 4, 6, workers=0))
    assert [b.step for b in streamed] == list(range(6)) and [b.step for b in resumed] == [4, 5]
    for a, b in zip(streamed, cached):
        assert torch.equal(a.sketches, b.sketches) and torch.equal(a.photos, b.photos)
        assert torch.equal(a.sketch_labels, b.sketch_labels) and torch.equal(a.linked, b.linked)
    assert torch.equal(resumed[0].sketches, streamed[4].sketches)


def test_ranks_get_disjoint_halves_of_each_step(split) -> None:
    sampler = PairSampler(split, batch_size=8, seed=0)
    pre = {"sketch": PRE, "photo": PRE}
    whole = StepBatches(sampler, pre)[2]
    halves = [StepBatches(sampler, pre, rank=r, world_size=2)[2] for r in (0, 1)]
    assert torch.equal(torch.cat([h.sketches for h in halves]), whole.sketches)
    assert torch.equal(torch.cat([h.photo_index for h in halves]), whole.photo_index)


def test_cache_choice(split) -> None:
    assert use_cache(split, 64, "auto", 2048) and not use_cache(split, 64, "none", 2048)
    assert not use_cache(split, 4096, "auto", 1) and use_cache(split, 4096, "memory", 1)
    with pytest.raises(ValueError, match="cache must be"):
        use_cache(split, 64, "disk", 1)


def test_a_broken_image_names_its_file(split, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(OSError, match="broken.png: cannot be decoded"):
        decode_all([split.photo_paths[0], broken], PRE, workers=0)


def test_style_jitter_is_seeded_and_changes_only_the_chosen_sketches() -> None:
    from models.data import style_jitter

    sketches = torch.ones(64, 3, 32, 32)
    sketches[:, :, 10:22, 15:17] = 0.0  # a vertical stroke
    first = style_jitter(sketches, torch.Generator().manual_seed(0), 0.5)
    again = style_jitter(sketches, torch.Generator().manual_seed(0), 0.5)
    assert torch.equal(first, again)
    changed = (first != sketches).flatten(1).any(dim=1)
    assert 16 < int(changed.sum()) < 48  # about half
    thicker = (first < 0.5).flatten(1).sum(dim=1) > (sketches < 0.5).flatten(1).sum(dim=1)
    fainter = (first.flatten(1).min(dim=1).values > 0.2)
    assert thicker.any() and fainter.any()
    assert torch.equal(style_jitter(sketches, torch.Generator().manual_seed(0), 0.0), sketches)
