"""Behaviour of the DSN-style method and the training engine on tiny data (CPU, seconds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import PairSampler, PairedImages, augment, load_paired_images
from models.dsn import DSNConfig, as_retrieval_model, dsn_losses, load_net, save_model
from models.engine import TrainConfig, build_net, train
from models.losses import SketchMemoryBank, cross_modal_infonce, supervised_contrastive
from models.registry import load_model
from sbir.manifest import read_manifest

TINY = TrainConfig(epochs=2, batch_size=8, lr=2e-3, checkpoint_every=2, num_threads=1,
                   model=DSNConfig(image_size=32, embedding_dim=32, projection_dim=16, memory_size=4))


@pytest.fixture(scope="module")
def data(tiny_openmoji: Path) -> PairedImages:
    full = load_paired_images(read_manifest(tiny_openmoji), "train", image_size=32, progress=False)
    keep = full.sketch_labels < 6  # six categories: 12 photos, 24 sketches
    photo_keep = full.photo_labels < 6
    photo_index = torch.full((len(full.photos),), -1, dtype=torch.int64)
    photo_index[photo_keep] = torch.arange(int(photo_keep.sum()))
    links = full.sketch_to_photo[keep]
    return PairedImages(sketches=full.sketches[keep], photos=full.photos[photo_keep],
                        sketch_labels=full.sketch_labels[keep], photo_labels=full.photo_labels[photo_keep],
                        sketch_to_photo=torch.where(links >= 0, photo_index[links.clamp(min=0)], -1),
                        categories=full.categories[:6])


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_embeddings_are_unit_and_shaped(data: PairedImages) -> None:
    net = build_net(TINY, data.num_classes).eval()
    images = data.sketches[:5].float() / 255
    with torch.no_grad():
        out = net(images, data.photos[:5].float() / 255)
    assert out["sketch"].shape == out["photo"].shape == (5, 32)
    assert torch.allclose(out["sketch"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert out["logits"].shape == (10, data.num_classes) and out["projected"].shape == (10, 16)


def test_photo_edge_map_draws_outlines_only(data: PairedImages) -> None:
    net = build_net(replace(TINY, model=replace(TINY.model, photo_edges=True, pool="flatten")), data.num_classes)
    square = torch.ones(1, 3, 32, 32)
    square[:, :, 8:24, 8:24] = 0.2  # a dark filled square on white
    edges = net.edge_map(square)[0, 0]
    assert edges[0, 0] > 0.999 and edges[16, 16] > 0.999  # flat regions (and the image border) stay white
    assert edges[8, 16] < 0.5 and edges[16, 7] < 0.5  # the square's outline is drawn
    assert torch.allclose(net.edge_map(torch.ones(2, 3, 32, 32)), torch.ones(2, 3, 32, 32), atol=1e-4)
    with torch.no_grad():
        assert net.eval().embed(square, "photo").shape == (1, 32)


def test_losses_on_hand_made_cases() -> None:
    aligned = torch.eye(4)
    assert cross_modal_infonce(aligned, aligned, torch.eye(4, dtype=torch.bool), 0.07) < 1e-3
    assert cross_modal_infonce(aligned, aligned.roll(1, 0), torch.eye(4, dtype=torch.bool), 0.07) > 10
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]]), dim=1)
    good = supervised_contrastive(features, torch.tensor([0, 0, 1, 1]), 0.1)
    bad = supervised_contrastive(features, torch.tensor([0, 1, 0, 1]), 0.1)
    assert good < 0.01 < bad
    bank = SketchMemoryBank(num_classes=3, size=2, dim=2)
    bank.update(torch.tensor([[1.0, 0], [0, 1], [0, 1], [0, 1]]), torch.tensor([0, 1, 1, 1]))
    assert bank.filled.tolist() == [1, 2, 0] and bank.cursor.tolist() == [1, 1, 0]
    prototypes, present = bank.prototypes()
    assert present.tolist() == [True, True, False] and torch.allclose(prototypes[1], torch.tensor([0.0, 1.0]))
    assert bank.loss(torch.tensor([[1.0, 0]]), torch.tensor([0]), 0.1) < bank.loss(torch.tensor([[1.0, 0]]),
                                                                                    torch.tensor([1]), 0.1)


def test_sampler_pairs_sketches_with_their_photos(data: PairedImages) -> None:
    sampler = PairSampler(data, batch_size=8, seed=0)
    sketches, photos, linked = sampler.batch(epoch=0, step=1)
    assert torch.equal(photos, data.sketch_to_photo[sketches]) and linked.all()
    assert torch.equal(sampler.batch(0, 1)[0], sketches) and not torch.equal(sampler.batch(1, 1)[0], sketches)
    unlinked = replace(data, sketch_to_photo=torch.full_like(data.sketch_to_photo, -1))
    sketches, photos, linked = PairSampler(unlinked, 8, 0).batch(0, 0)
    assert torch.equal(data.photo_labels[photos], data.sketch_labels[sketches])  # same-category fallback
    assert not linked.any()


def test_category_runs_sampler_covers_every_sketch_in_same_category_runs(data: PairedImages) -> None:
    sampler = PairSampler(data, batch_size=8, seed=0, per_category=4)
    for epoch in (0, 1):
        order = sampler._epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(len(data.sketches)))  # a permutation: nothing lost or doubled
    sketches, photos, linked = sampler.batch(0, 0)
    labels = data.sketch_labels[sketches]
    assert len(labels.unique()) <= 2 + 1  # runs of 4: a batch of 8 spans at most two categories (+ a short run)
    assert torch.equal(photos, data.sketch_to_photo[sketches]) and linked.all()
    assert torch.equal(sampler.batch(0, 0)[0], sketches) and sampler.steps_per_epoch == len(data.sketches) // 8
    plain = PairSampler(data, batch_size=8, seed=0)
    assert len(data.sketch_labels[plain.batch(0, 0)[0]].unique()) > 3  # without runs: mixed categories
    with pytest.raises(ValueError, match="per_category"):
        PairSampler(data, 8, 0, per_category=0)


@pytest.mark.parametrize("pool", ["flatten", "avg"])
def test_backbone_cut_at_a_stage_gives_unit_embeddings(data: PairedImages, pool: str) -> None:
    config = replace(TINY, model=replace(TINY.model, feature_level=2, pool=pool))
    net = build_net(config, data.num_classes).eval()
    whole = build_net(replace(TINY, model=replace(TINY.model, pool=pool)), data.num_classes)
    assert sum(p.numel() for p in net.backbone.parameters()) < sum(p.numel() for p in whole.backbone.parameters())
    with torch.no_grad():
        out = net(data.sketches[:3].float() / 255, data.photos[:3].float() / 255)
    assert out["sketch"].shape == (3, 32) and torch.allclose(out["photo"].norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="feature_level needs a timm backbone"):
        build_net(replace(TINY, model=replace(TINY.model, backbone="open_clip:RN50", feature_level=2)), 3)


def test_augment_is_seeded_and_keeps_white_background(data: PairedImages) -> None:
    first = augment(data.photos[:4], torch.Generator().manual_seed(1), colour=True)
    again = augment(data.photos[:4], torch.Generator().manual_seed(1), colour=True)
    assert torch.equal(first, again) and first.min() >= 0 and first.max() <= 1
    blank = augment(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert torch.allclose(blank, torch.ones_like(blank), atol=1e-5)  # rotation pads with white, not black


def test_loss_decreases_and_tiny_batch_is_overfit(data: PairedImages) -> None:
    torch.manual_seed(0)
    net = build_net(TINY, data.num_classes).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    sketches = data.sketches[:8].float() / 255
    photo_idx = data.sketch_to_photo[:8]
    photos = data.photos[photo_idx].float() / 255
    same = photo_idx[:, None] == photo_idx[None, :]
    totals = []
    for _ in range(40):
        out = net(sketches, photos)
        terms = dsn_losses(net, out, data.sketch_labels[:8], data.photo_labels[photo_idx], same)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        net.memory.update(out["sketch"], data.sketch_labels[:8])
        totals.append(float(terms["total"].detach()))
    assert totals[-1] < 0.5 * totals[0]
    with torch.no_grad():  # the batch as trained on (BatchNorm in batch-statistics mode)
        out = net(sketches, photos)
    assert torch.equal(photo_idx[(out["sketch"] @ out["photo"].T).argmax(dim=1)], photo_idx)


def test_training_is_deterministic_and_resume_is_exact(data: PairedImages, tmp_path: Path) -> None:
    uninterrupted, _ = train(TINY, data, tmp_path / "a", progress=False)
    again, _ = train(TINY, data, tmp_path / "b", progress=False)
    reference = _weights(uninterrupted)
    assert all(torch.equal(reference[k], v) for k, v in _weights(again).items())
    # interrupted mid-epoch after step 3 (last checkpoint at step 2), then resumed from the saved state
    train(TINY, data, tmp_path / "c", progress=False, stop_after_steps=3)
    assert (tmp_path / "c" / "state.pt").is_file()
    resumed, times = train(TINY, data, tmp_path / "c", progress=False)
    assert times.steps == 2 * PairSampler(data, 8, 0).steps_per_epoch - 2
    assert all(torch.equal(reference[k], v) for k, v in _weights(resumed).items())
    different, _ = train(replace(TINY, seed=1), data, tmp_path / "d", progress=False)
    assert not torch.equal(_weights(different)["heads.sketch.weight"], reference["heads.sketch.weight"])


def test_resume_refuses_a_state_from_other_settings_or_data(data: PairedImages, tmp_path: Path) -> None:
    train(TINY, data, tmp_path, progress=False, stop_after_steps=2)
    with pytest.raises(ValueError, match="other config"):
        train(replace(TINY, lr=1e-4), data, tmp_path, progress=False)
    relabelled = replace(data, sketch_labels=data.sketch_labels.roll(1))
    with pytest.raises(ValueError, match="other data"):
        train(TINY, relabelled, tmp_path, progress=False)


def test_resumed_run_reports_completion_and_batches_must_shard(data: PairedImages, tmp_path: Path) -> None:
    from models.engine import Distributed

    _, first = train(TINY, data, tmp_path, progress=False, stop_after_steps=2)
    assert not first.completed and first.global_step == 2
    _, rest = train(TINY, data, tmp_path, progress=False, stop_after_steps=10_000)
    assert rest.completed and rest.global_step == rest.total_steps
    with pytest.raises(ValueError, match="equal shards"):
        train(TINY, data, tmp_path / "x", progress=False, ctx=Distributed(rank=0, world_size=3))


def test_category_level_pairs_never_enter_the_instance_term(data: PairedImages, tmp_path: Path) -> None:
    unlinked = replace(data, sketch_to_photo=torch.full_like(data.sketch_to_photo, -1))
    logged: list[dict] = []
    train(replace(TINY, epochs=1), unlinked, tmp_path, progress=False, log=logged.append)
    assert logged and all(entry["instance"] == 0.0 for entry in logged)
    assert all(entry["classification"] > 0 for entry in logged)


def test_save_load_round_trip_gives_identical_embeddings(data: PairedImages, tmp_path: Path) -> None:
    net, _ = train(replace(TINY, epochs=1), data, tmp_path / "state", progress=False)
    save_model(net, tmp_path / "ckpt", {"dataset": "tiny", "train_categories": data.categories})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    from PIL import Image

    images = [Image.fromarray(data.sketches[i].permute(1, 2, 0).numpy()) for i in range(4)]
    before = as_retrieval_model(net).encode_sketches(images)
    after = load_model(tmp_path / "ckpt").encode_sketches(images)
    assert np.array_equal(before, after)
    assert torch.equal(load_net(tmp_path / "ckpt").memory.filled, net.memory.filled)
    assert np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
