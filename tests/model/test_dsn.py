"""Behaviour of the DSN-style method and the training engine on tiny data (CPU, seconds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, load_model, load_network, read_config, save_method
from models.data import PairSampler, TrainSplit, augment, contrastive_view, decode_all
from models.dsn import DSN, DSNConfig, dsn_losses
from models.engine import RuntimeConfig, TrainConfig, build_net, train
from models.imaging import standardise
from models.losses import SketchMemoryBank, cross_modal_infonce, knowledge_preservation, supervised_contrastive
from models.method import Batch
from sbir.config import ConfigError
from models.registry import lookup
from sbir.manifest import read_manifest
from helpers import config

TINY = config(TrainConfig, "dsn.train", epochs=2, batch_size=8, lr=2e-3)
RUN = config(RuntimeConfig, "train.runtime", checkpoint_every=2, num_threads=1, workers=0, cache="memory")
METHOD = DSN(config(DSNConfig, "dsn.model", image_size=32, embedding_dim=32, projection_dim=16, memory_size=4))


def _method(**changes) -> DSN:
    return DSN(replace(METHOD.config, **changes))


@pytest.fixture(scope="module")
def images(data: TrainSplit) -> dict[str, torch.Tensor]:
    preprocess = METHOD.preprocess()
    return {"sketch": decode_all(data.sketch_paths, preprocess["sketch"], workers=0),
            "photo": decode_all(data.photo_paths, preprocess["photo"], workers=0)}


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_embeddings_are_unit_and_shaped(data: TrainSplit, images) -> None:
    net = build_net(METHOD, TINY, data.num_classes).eval()
    with torch.no_grad():
        out = net(images["sketch"][:5].float() / 255, images["photo"][:5].float() / 255)
    assert out["sketch"].shape == out["photo"].shape == (5, 32)
    assert torch.allclose(out["sketch"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert out["logits"].shape == (10, data.num_classes) and out["projected"].shape == (10, 16)


def test_photo_edge_map_draws_outlines_only(data: TrainSplit) -> None:
    net = build_net(_method(photo_edges=True, pool="flatten"), TINY, data.num_classes)
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
    student, teacher = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    target = torch.softmax(teacher, dim=1)[0]
    by_hand = -float((target * torch.log_softmax(student, dim=1)[0]).sum())
    assert float(knowledge_preservation(student, teacher)) == pytest.approx(by_hand)


def test_memory_keeps_the_sketches_nearest_the_photo_mean_and_pulls_photos_to_their_centre() -> None:
    bank = SketchMemoryBank(num_classes=3, size=2, dim=2)
    photos, photo_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    bank.update(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 0]), photos, photo_labels)
    assert bank.filled.tolist() == [2, 0, 0]  # room: stored in order
    # full: a sketch nearer category 0's photo mean (1, 0) replaces the stored one least like it, (0, 1)
    bank.update(torch.tensor([[1.0, 0.1]]), torch.tensor([0]), photos, photo_labels)
    assert torch.equal(bank.memory[0], torch.tensor([[1.0, 0.1], [1.0, 1.0]]))
    # a sketch further from the mean than every stored one is not kept; nor one whose category has no photo
    bank.update(torch.tensor([[-1.0, 1.0]]), torch.tensor([0]), photos, photo_labels)
    bank.update(torch.tensor([[5.0, 5.0]]), torch.tensor([0]), photos[1:], photo_labels[1:])
    assert torch.equal(bank.memory[0], torch.tensor([[1.0, 0.1], [1.0, 1.0]]))
    centres, present = bank.centres()
    assert present.tolist() == [True, False, False] and torch.allclose(centres[0], torch.tensor([1.0, 0.55]))
    query = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    cosines = [1.0 / (1.0 ** 2 + 0.55 ** 2) ** 0.5, (3.0 + 4 * 0.55) / (5.0 * (1.0 + 0.55 ** 2) ** 0.5)]
    assert float(bank.loss(query, torch.tensor([0, 0]))) == pytest.approx(1 - sum(cosines) / 2, abs=1e-6)
    assert float(bank.loss(query, torch.tensor([1, 2]))) == 0.0  # no stored sketch of those categories


def test_contrastive_views_are_seeded_flipped_jittered_and_sometimes_grey() -> None:
    images = (torch.rand(400, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    first = contrastive_view(images, torch.Generator().manual_seed(0))
    assert torch.equal(first, contrastive_view(images, torch.Generator().manual_seed(0)))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    grey = (first[:, 0] == first[:, 1]).flatten(1).all(1) & (first[:, 1] == first[:, 2]).flatten(1).all(1)
    assert 0.12 < float(grey.float().mean()) < 0.28  # p 0.2
    untouched = (first == images.float() / 255).flatten(1).all(1)
    flipped = (first == images.float().flip(-1) / 255).flatten(1).all(1)
    assert 0.05 < float((untouched | flipped).float().mean()) < 0.25  # no jitter (p 0.2) and not grey (p 0.8)
    assert untouched.any() and flipped.any()


def test_views_enter_the_contrastive_term_and_the_memory_gradient_is_named(data: TrainSplit, images) -> None:
    method = _method(contrastive_views=2, loss_weights={"contrastive": 1.0, "memory": 1.0})
    net = build_net(method, TINY, data.num_classes).train()
    sketches, photos = method.augment(images["sketch"][:4], images["photo"][:4], torch.Generator().manual_seed(0))
    assert sketches.shape[0] == photos.shape[0] == 12  # 4 pairs, then two views of each
    labels = data.sketch_labels[:4]
    batch = Batch(sketches, photos, labels, labels, torch.eye(4, dtype=torch.bool))
    out = method.forward(net, batch)
    assert out["projected"].shape == (16, METHOD.config.projection_dim) and out["sketch"].shape == (4, 32)
    method.after_step(net, out, batch, lambda tensor: tensor)
    for gradient in (True, False):
        net.config = replace(method.config, memory_gradient=gradient)
        out = method.forward(net, batch)
        features = out["photo_features"]
        features.retain_grad()
        memory = method.losses(net, out, batch)["memory"]
        assert memory.requires_grad == gradient  # the release detaches the photos: no gradient
        if gradient:
            memory.backward()
            assert features.grad.abs().sum() > 0


def test_the_teacher_is_the_frozen_pretrained_classifier_outside_the_state_dict(data: TrainSplit) -> None:
    import timm

    from models.backbones import package_state_dict

    net = _method(loss_weights={"knowledge": 1.0}).build(data.num_classes)
    assert net.teacher is not None and not any(p.requires_grad for p in net.teacher.parameters())
    assert not any(key.startswith("teacher") for key in net.state_dict())
    assert {id(p) for p in net.teacher.parameters()}.isdisjoint(id(p) for p in net.parameters())
    reference = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    reference.load_state_dict(package_state_dict("efficientnet_lite0", "efficientnet_lite0"))
    photos = torch.rand(2, 3, 32, 32)
    expected = reference(standardise(photos, net))
    assert torch.allclose(net.teacher_logits(photos), expected, atol=1e-5)
    without = DSN(replace(METHOD.config, pretrained=None, loss_weights={"knowledge": 1.0})).build(data.num_classes)
    with pytest.raises(ConfigError, match="pretrained teacher"):
        without.teacher_logits(photos)


def test_sampler_pairs_sketches_with_their_photos(data: TrainSplit) -> None:
    sampler = PairSampler(data, batch_size=8, seed=0)
    sketches, photos, linked = sampler.batch(epoch=0, step=1)
    assert torch.equal(photos, data.sketch_to_photo[sketches]) and linked.all()
    assert torch.equal(sampler.batch(0, 1)[0], sketches) and not torch.equal(sampler.batch(1, 1)[0], sketches)
    unlinked = replace(data, sketch_to_photo=torch.full_like(data.sketch_to_photo, -1))
    sketches, photos, linked = PairSampler(unlinked, 8, 0).batch(0, 0)
    assert torch.equal(data.photo_labels[photos], data.sketch_labels[sketches])  # same-category fallback
    assert not linked.any()


def test_category_pairs_draw_any_photo_of_the_category_unlinked_ones_included(data: TrainSplit) -> None:
    """Sketchy-Extended's extended photos have no sketch: only category pairs bring them into training."""
    extended = replace(data, photo_paths=data.photo_paths + data.photo_paths[:4],  # four photos without sketches
                       photo_labels=torch.cat([data.photo_labels, data.photo_labels[:4]]))
    extra = set(range(len(data.photo_paths), len(extended.photo_paths)))
    data = extended
    linked_only = PairSampler(data, 8, 0).batch(0, 0)
    assert not extra & set(linked_only[1].tolist())
    assert torch.equal(PairSampler(data, 8, 0, category_pairs=0.0).batch(0, 0)[1], linked_only[1])  # the default
    everyone = PairSampler(data, 8, 0, category_pairs=1.0)
    drawn, kept = set(), 0
    for step in range(everyone.steps_per_epoch):
        sketches, photos, linked = everyone.batch(0, step)
        assert torch.equal(data.photo_labels[photos], data.sketch_labels[sketches])
        assert torch.equal(linked, photos == data.sketch_to_photo[sketches])  # a link only where it is the photo
        assert torch.equal(everyone.batch(0, step)[1], photos)  # deterministic in (seed, epoch, step)
        drawn |= set(photos.tolist())
        kept += int(linked.sum())
    assert kept < everyone.steps_per_epoch * 8 / 2  # most pairs are category pairs
    assert drawn & extra  # photos no sketch links to are drawn
    half = PairSampler(data, 8, 0, category_pairs=0.5)
    shares = [float(half.batch(0, step)[2].float().mean()) for step in range(half.steps_per_epoch)]
    assert 0.3 < sum(shares) / len(shares) < 0.8


def test_a_sketch_paired_with_another_photo_keeps_its_own_photo_as_the_instance_positive() -> None:
    from models.data import StepBatch
    from models.engine import _to_batch

    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    labels = torch.zeros(3, dtype=torch.long)
    # sketch 0 (drawn from photo 7) got photo 5 of its category; sketch 1 is paired with photo 7; sketch 2 has no link
    item = StepBatch(0, images, images, labels, labels, photo_index=torch.tensor([5, 7, 9]),
                     linked=torch.tensor([False, False, False]), sketch_link=torch.tensor([7, 4, -1]))
    batch = _to_batch(item, METHOD, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert batch.same_instance.tolist() == [[False, True, False], [False, False, False], [False, False, False]]


def test_category_runs_sampler_covers_every_sketch_in_same_category_runs(data: TrainSplit) -> None:
    sampler = PairSampler(data, batch_size=8, seed=0, per_category=4)
    for epoch in (0, 1):
        order = sampler._epoch_order(epoch)
        assert sorted(order.tolist()) == list(range(len(data.sketch_paths)))  # a permutation: nothing lost or doubled
    sketches, photos, linked = sampler.batch(0, 0)
    labels = data.sketch_labels[sketches]
    assert len(labels.unique()) <= 2 + 1  # runs of 4: a batch of 8 spans at most two categories (+ a short run)
    assert torch.equal(photos, data.sketch_to_photo[sketches]) and linked.all()
    assert torch.equal(sampler.batch(0, 0)[0], sketches) and sampler.steps_per_epoch == len(data.sketch_paths) // 8
    plain = PairSampler(data, batch_size=8, seed=0)
    assert len(data.sketch_labels[plain.batch(0, 0)[0]].unique()) > 3  # without runs: mixed categories
    with pytest.raises(ValueError, match="per_category"):
        PairSampler(data, 8, 0, per_category=0)


@pytest.mark.parametrize("pool", ["flatten", "avg"])
def test_backbone_cut_at_a_stage_gives_unit_embeddings(data: TrainSplit, images, pool: str) -> None:
    net = build_net(_method(feature_level=2, pool=pool), TINY, data.num_classes).eval()
    whole = build_net(_method(feature_level=None, pool=pool), TINY, data.num_classes)
    assert sum(p.numel() for p in net.backbone.parameters()) < sum(p.numel() for p in whole.backbone.parameters())
    with torch.no_grad():
        out = net(images["sketch"][:3].float() / 255, images["photo"][:3].float() / 255)
    assert out["sketch"].shape == (3, 32) and torch.allclose(out["photo"].norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="feature_level needs a timm backbone"):
        build_net(_method(backbone="open_clip:RN50", feature_level=2, pool="avg"), TINY, 3)


def test_augment_is_seeded_and_keeps_white_background(images) -> None:
    first = augment(images["photo"][:4], torch.Generator().manual_seed(1), colour=True)
    again = augment(images["photo"][:4], torch.Generator().manual_seed(1), colour=True)
    assert torch.equal(first, again) and first.min() >= 0 and first.max() <= 1
    blank = augment(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert torch.allclose(blank, torch.ones_like(blank), atol=1e-5)  # rotation pads with white, not black


def test_loss_decreases_and_tiny_batch_is_overfit(data: TrainSplit, images) -> None:
    torch.manual_seed(0)
    net = build_net(METHOD, TINY, data.num_classes).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    sketches = images["sketch"][:8].float() / 255
    photo_idx = data.sketch_to_photo[:8]
    photos = images["photo"][photo_idx].float() / 255
    same = photo_idx[:, None] == photo_idx[None, :]
    teacher = net.teacher_logits(photos)
    totals = []
    for _ in range(40):
        out = net(sketches, photos)
        terms = dsn_losses(net, out, data.sketch_labels[:8], data.photo_labels[photo_idx], same, teacher)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        net.memory.update(out["sketch_features"], data.sketch_labels[:8], out["photo_features"],
                          data.photo_labels[photo_idx])
        totals.append(float(terms["total"].detach()))
    assert totals[-1] < 0.5 * totals[0]
    with torch.no_grad():  # the batch as trained on (BatchNorm in batch-statistics mode)
        out = net(sketches, photos)
    assert torch.equal(photo_idx[(out["sketch"] @ out["photo"].T).argmax(dim=1)], photo_idx)


def _train(data: TrainSplit, state: Path, method: DSN = METHOD, config: TrainConfig = TINY,
           runtime: RuntimeConfig = RUN, **kwargs):
    return train(method, config, runtime, data, state, progress=False, **kwargs)


def test_training_is_deterministic_and_resume_is_exact(data: TrainSplit, tmp_path: Path) -> None:
    uninterrupted, _ = _train(data, tmp_path / "a")
    again, _ = _train(data, tmp_path / "b")
    reference = _weights(uninterrupted)
    assert all(torch.equal(reference[k], v) for k, v in _weights(again).items())
    # interrupted mid-epoch after step 3 (last checkpoint at step 2), then resumed from the saved state
    _train(data, tmp_path / "c", stop_after_steps=3)
    assert (tmp_path / "c" / "state.pt").is_file()
    resumed, times = _train(data, tmp_path / "c")
    assert times.steps == 2 * PairSampler(data, 8, 0).steps_per_epoch - 2
    assert all(torch.equal(reference[k], v) for k, v in _weights(resumed).items())
    different, _ = _train(data, tmp_path / "d", config=replace(TINY, seed=1))
    assert not torch.equal(_weights(different)["heads.sketch.weight"], reference["heads.sketch.weight"])


def test_streamed_batches_train_exactly_like_cached_ones(data: TrainSplit, tmp_path: Path) -> None:
    """DataLoader workers decoding from disk (and resuming mid-run) give the in-memory cache's weights."""
    cached, _ = _train(data, tmp_path / "cached")
    streamed_run = replace(RUN, cache="none", workers=2, prefetch=1)
    _train(data, tmp_path / "streamed", runtime=streamed_run, stop_after_steps=2)
    streamed, times = _train(data, tmp_path / "streamed", runtime=streamed_run)
    assert times.steps == 2 * PairSampler(data, 8, 0).steps_per_epoch - 2
    assert all(torch.equal(_weights(cached)[k], v) for k, v in _weights(streamed).items())


def test_resume_refuses_a_state_from_other_settings_or_data(data: TrainSplit, tmp_path: Path) -> None:
    _train(data, tmp_path, stop_after_steps=2)
    with pytest.raises(ValueError, match="other train"):
        _train(data, tmp_path, config=replace(TINY, lr=1e-4))
    with pytest.raises(ValueError, match="other config"):
        _train(data, tmp_path, method=_method(temperature=0.1))
    with pytest.raises(ValueError, match="other data"):
        _train(replace(data, fingerprint="another manifest"), tmp_path)
    _train(data, tmp_path, runtime=replace(RUN, checkpoint_every=5))  # how to run may change on resume


def test_resumed_run_reports_completion_and_batches_must_shard(data: TrainSplit, tmp_path: Path) -> None:
    from models.engine import Distributed

    _, first = _train(data, tmp_path, stop_after_steps=2)
    assert not first.completed and first.global_step == 2
    _, rest = _train(data, tmp_path, stop_after_steps=10_000)
    assert rest.completed and rest.global_step == rest.total_steps
    with pytest.raises(ValueError, match="equal shards"):
        _train(data, tmp_path / "x", ctx=Distributed(rank=0, world_size=3))


def test_category_level_pairs_never_enter_the_instance_term(data: TrainSplit, tmp_path: Path) -> None:
    unlinked = replace(data, sketch_to_photo=torch.full_like(data.sketch_to_photo, -1))
    logged: list[dict] = []
    _train(unlinked, tmp_path, config=replace(TINY, epochs=2), log_epoch=lambda epoch, means: logged.append(means))
    assert len(logged) == 2 and all(entry["instance"] == 0.0 for entry in logged)
    assert all(entry["classification"] > 0 and entry["lr"] > 0 for entry in logged)


def test_save_load_round_trip_gives_identical_embeddings(data: TrainSplit, images, tmp_path: Path) -> None:
    net, _ = _train(data, tmp_path / "state", config=replace(TINY, epochs=1))
    facts = {"dataset": "six", "train_categories": data.categories, "data_fingerprint": data.fingerprint, "train": {}}
    save_method(tmp_path / "ckpt", METHOD, net, facts)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    config = read_config(tmp_path / "ckpt")
    assert config["schema_version"] == 2 and config["method"] == "dsn" and config["data_fingerprint"] == data.fingerprint
    assert config["preprocess"]["sketch"]["image_size"] == 32 and config["num_classes"] == 6
    written = (tmp_path / "ckpt" / "config.json").read_text()
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(written.replace('"schema_version": 2', '"schema_version": 1'))
    with pytest.raises(CheckpointError, match=r"schema 1, written before the methods followed their papers.*"
                                              r"dvc repro train@dsn"):
        read_config(old)  # a method folder of the old format: refused, saying what to do
    from PIL import Image

    pictures = [Image.open(path) for path in data.sketch_paths[:4]]  # the files `images` were decoded from
    before = METHOD.export(net).encode_sketches(pictures)
    loaded = load_model(tmp_path / "ckpt")
    assert np.array_equal(before, loaded.encode_sketches(pictures))
    assert np.array_equal(before, loaded.encode_batch(images["sketch"][:4], "sketch"))  # tensors, no PIL
    _, net_again, _ = load_network(tmp_path / "ckpt")
    assert torch.equal(net_again.memory.filled, net.memory.filled)
    assert np.allclose(np.linalg.norm(before, axis=1), 1, atol=1e-5)
    # both encoders run on one network: the shared backbone is one set of tensors, stored once
    sketch_encoder, photo_encoder = loaded.encoders["sketch"], loaded.encoders["photo"]
    assert sketch_encoder.net is photo_encoder.net
    shared = {p.data_ptr() for p in sketch_encoder.parameters()} & {p.data_ptr() for p in photo_encoder.parameters()}
    assert len(shared) >= len(list(net.backbone.parameters()))


def test_method_contract_groups_and_registry(data: TrainSplit) -> None:
    assert lookup("dsn") is DSN and DSN.name == "dsn"
    net = METHOD.build(data.num_classes)
    groups = METHOD.param_groups(net, 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters())) and groups[0]["lr"] == 0.01
    split = _method(backbone_lr_factor=0.1).param_groups(net, 0.01)
    assert [g["lr"] for g in split] == [pytest.approx(0.001), 0.01]
    assert {id(p) for p in split[0]["params"]} == {id(p) for p in net.backbone.parameters()}
    assert sum(len(g["params"]) for g in split) == len(list(net.parameters()))
    with pytest.raises(KeyError, match="unknown method 'nope'.*dsn"):
        lookup("nope", "method")
    with pytest.raises(TypeError, match="DSNConfig"):
        DSN({"image_size": 32})


def test_explanation_decomposes_the_served_score_into_patch_pairs(tiny_openmoji: Path) -> None:
    from PIL import Image

    from models.interface import MatchExplainer

    method = _method(image_size=32, pool="flatten", feature_level=2, pretrained=None)
    model = method.export(method.build(4, load_pretrained=False).eval())
    assert isinstance(model, MatchExplainer) and model.capabilities == {"explain"}
    frame = read_manifest(tiny_openmoji).frame
    sketch = Image.open(tiny_openmoji / frame[frame["domain"] == "sketch"]["path"].iloc[0])
    photo = Image.open(tiny_openmoji / frame[frame["domain"] == "photo"]["path"].iloc[0])
    explanation = model.explain(sketch, photo, top=5)
    cosine = float((model.encode([sketch], "sketch") @ model.encode([photo], "photo").T)[0, 0])
    assert explanation.score == pytest.approx(cosine, abs=1e-5)  # the parts add up to the served score
    assert explanation.sketch_grid == explanation.photo_grid and len(explanation.sketch_grid) == 2
    assert 0 < len(explanation.matches) <= 5
    weights = [m.weight for m in explanation.matches]
    assert weights == sorted(weights, reverse=True) and weights[0] > 0
    assert explanation.sketch_heatmap.max() == pytest.approx(1.0)  # MatchExplanation checks grids and ranges


def test_a_pooled_whole_network_has_no_explain_capability() -> None:
    method = _method(image_size=32, pool="avg", feature_level=None, pretrained=None, backbone="timm:resnet18")
    assert method.export(method.build(4, load_pretrained=False)).capabilities == frozenset()


def test_modality_conditioned_se_starts_as_the_pretrained_se_and_then_tells_domains_apart() -> None:
    import threading

    import timm

    from models.conditioning import ModalitySE, condition_on_modality

    torch.manual_seed(0)
    plain = timm.create_model("legacy_seresnet18", pretrained=False, num_classes=0).eval()
    conditioned = timm.create_model("legacy_seresnet18", pretrained=False, num_classes=0).eval()
    conditioned.load_state_dict(plain.state_dict())
    tag = condition_on_modality(conditioned)
    se = [m for m in conditioned.modules() if isinstance(m, ModalitySE)]
    assert len(se) == 8 and all(m.fc2.in_channels == m.fc1.out_channels + 1 for m in se)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for tags in (torch.zeros(2), torch.ones(2)):  # the tag's weights start at zero: SE as pretrained
            tag.set(tags)
            assert torch.allclose(conditioned(images), plain(images), atol=1e-5)
        for module in se:
            module.fc2.weight[:, -1] = 1.0
        tag.set(torch.tensor([0.0, 1.0]))
        mixed = conditioned(images)
        tag.set(torch.zeros(2))
        assert torch.allclose(conditioned(images)[0], mixed[0], atol=1e-5)
        assert not torch.allclose(conditioned(images)[1], mixed[1], atol=1e-3)  # the photo's gates differ
        seen = []
        worker = threading.Thread(target=lambda: seen.append(tag.value))
        worker.start()
        worker.join()
        assert seen == [None]  # each thread tags its own batches
        tag.set(torch.zeros(3))
        with pytest.raises(RuntimeError, match="set the modality tag"):
            conditioned(images)
    with pytest.raises(ValueError, match="no squeeze-and-excitation"):
        condition_on_modality(timm.create_model("resnet18", pretrained=False))
    on_meta = conditioned.to("meta")  # another device than the tag's (a GPU in use): the tag follows the images
    tag.set(torch.zeros(2))
    assert on_meta(torch.empty(2, 3, 32, 32, device="meta")).device.type == "meta"


def test_dsn_with_modality_conditioning_builds_with_a_flattened_map() -> None:
    net = _method(backbone="timm:legacy_seresnet18", pretrained=None, feature_level=None, pool="flatten",
                  modality_conditioning=True).build(3).eval()
    with torch.no_grad():
        assert net.embed(torch.rand(2, 3, 32, 32), "photo").shape == (2, 32)


def test_dsn_with_modality_conditioning_trains_and_embeds_each_domain(data: TrainSplit, images) -> None:
    method = _method(backbone="timm:legacy_seresnet18", pretrained=None, feature_level=None, pool="avg",
                     modality_conditioning=True, shared_heads=True, contrastive_views=1,
                     loss_weights={"classification": 1.0, "contrastive": 0.1, "memory": 1.0})
    net = build_net(method, TINY, data.num_classes).train()
    sketches, photos = method.augment(images["sketch"][:4], images["photo"][:4], torch.Generator().manual_seed(0))
    labels = data.sketch_labels[:4]
    batch = Batch(sketches, photos, labels, labels, torch.eye(4, dtype=torch.bool))
    method.losses(net, method.forward(net, batch), batch)["total"].backward()
    assert all(m.fc2.weight.grad is not None for m in net.modules() if type(m).__name__ == "ModalitySE")
    net.eval()
    with torch.no_grad():
        for module in (m for m in net.modules() if type(m).__name__ == "ModalitySE"):
            module.fc2.weight[:, -1] = 1.0
        same = batch.photos[:2]
        assert not torch.allclose(net.embed(same, "sketch"), net.embed(same, "photo"), atol=1e-4)


def test_one_head_for_both_domains_saves_and_loads_tied(data: TrainSplit, tmp_path: Path) -> None:
    """The paper profile's single embedding head (``shared_heads``): safetensors refuses tied tensors, so each
    name is written as its own copy; loading ties them again (both names fill the one parameter)."""
    method = _method(shared_heads=True)
    net = build_net(method, TINY, len(data.categories), data.categories)
    assert net.heads["photo"].weight is net.heads["sketch"].weight
    facts = {"dataset": "six", "train_categories": data.categories, "data_fingerprint": data.fingerprint, "train": {}}
    save_method(tmp_path / "ckpt", method, net, facts)
    _, loaded, _ = load_network(tmp_path / "ckpt")
    assert loaded.heads["photo"].weight is loaded.heads["sketch"].weight
    assert torch.equal(loaded.heads["photo"].weight, net.heads["sketch"].weight)
