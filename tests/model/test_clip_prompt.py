"""Behaviour of CLIP prompt learning on tiny data and a tiny CLIP (CPU, seconds)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_CLIP_ARCHITECTURE
from PIL import Image

from models.backbones import BackboneError
from models.checkpoint import load_model, read_config, save_method
from models.clip.losses import (category_triplet, draw_permutations, patch_shuffle,
                                relative_distance_regulariser)
from models.clip.prompt import LOSS_TERMS, ClipPrompt, ClipPromptConfig, clip_prompt_losses, standardise
from models.clip.tower import build_clip, contrastive_loss, save_clip_folder
from models.data import TrainSplit, decode_all
from models.engine import RuntimeConfig, TrainConfig, build_net, train
from models.interface import MatchExplainer
from models.method import Batch
from models.registry import lookup
from helpers import config

TINY = config(TrainConfig, "dsn.train", epochs=1, batch_size=8, sketches_per_category=2, lr=1e-2, weight_decay=0.0)
RUN = config(RuntimeConfig, "train.runtime", checkpoint_every=100, num_threads=1, workers=0, cache="memory")


@pytest.fixture(scope="module")
def method(clip_folder: Path) -> ClipPrompt:
    return ClipPrompt(config(ClipPromptConfig, "clip_prompt.model", clip=str(clip_folder), prompts=2, shuffle_pairs=4))


@pytest.fixture(scope="module")
def images(data: TrainSplit, method: ClipPrompt) -> dict[str, torch.Tensor]:
    pre = method.preprocess()
    return {"sketch": decode_all(data.sketch_paths, pre["sketch"], workers=0),
            "photo": decode_all(data.photo_paths, pre["photo"], workers=0)}


def _net(method: ClipPrompt, data: TrainSplit):
    return build_net(method, TINY, data.num_classes, data.categories)


def _batch(method: ClipPrompt, data: TrainSplit, images) -> Batch:
    """Eight linked pairs, two emoji from each of four categories (hard negatives for the instance terms),
    with the shuffled views appended by the method's augment (a fixed generator: a fixed objective)."""
    rows = [i for c in range(4) for i in torch.nonzero(data.sketch_labels == c).flatten().tolist()[::2]][:8]
    sketch_idx = torch.tensor(rows)
    photo_idx = data.sketch_to_photo[sketch_idx]
    sketches, photos = method.augment(images["sketch"][sketch_idx], images["photo"][photo_idx],
                                      torch.Generator().manual_seed(0))
    same = photo_idx[:, None] == photo_idx[None, :]
    return Batch(sketches, photos, data.sketch_labels[sketch_idx], data.photo_labels[photo_idx], same)


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_embeddings_are_unit_and_shaped(method: ClipPrompt, data: TrainSplit, images) -> None:
    net = _net(method, data).eval()
    assert lookup("clip_prompt") is ClipPrompt and method.embedding_dim == 16
    assert net.prompts["sketch"].shape == (2, 2, 32)  # deep: one set per layer
    assert torch.allclose(net.class_text.norm(dim=1), torch.ones(data.num_classes), atol=1e-5)
    batch = _batch(method, data, images)
    assert batch.sketches.shape[0] == 8 + 4 and batch.photos.shape[0] == 8 + 2 * 4
    with torch.no_grad():
        out = method.forward(net, batch)
    assert out["sketch"].shape == out["photo"].shape == (8, 16) and out["logits"].shape == (16, data.num_classes)
    assert out["sketch_shuffled"].shape == out["photo_other"].shape == (4, 16)
    assert torch.allclose(out["sketch"].norm(dim=1), torch.ones(8), atol=1e-5)
    terms = clip_prompt_losses(net, out, batch)
    assert set(terms) == set(LOSS_TERMS) | {"total"} and all(torch.isfinite(v) for v in terms.values())
    shallow = _net(ClipPrompt(replace(method.config, deep=False)), data)
    assert shallow.prompts["photo"].shape == (1, 2, 32)


@pytest.mark.parametrize("term", LOSS_TERMS)
def test_every_loss_term_decreases(method: ClipPrompt, data: TrainSplit, images, term: str) -> None:
    only = ClipPrompt(replace(method.config, loss_weights={term: 1.0}))
    net = _net(only, data).train()
    batch = _batch(method, data, images)
    optimiser = torch.optim.Adam(only.param_groups(net, 1e-2))
    values = []
    for _ in range(8):
        terms = only.losses(net, only.forward(net, batch), batch)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        values.append(float(terms[term].detach()))
    assert values[0] > 0 and values[-1] < values[0], values


def test_training_moves_prompts_and_layernorms_only(method: ClipPrompt, data: TrainSplit, tmp_path: Path) -> None:
    net = _net(method, data)
    before = _weights(net)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompts.") or ".ln_" in n or n.startswith("visual.ln_")
                             for n in trainable)
    groups = ClipPrompt(replace(method.config, layernorm_lr_factor=0.1)).param_groups(net, 0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in net.parameters() if p.requires_grad}
    trained, _ = train(method, TINY, RUN, data, tmp_path, net=net, progress=False, stop_after_steps=2)
    after = _weights(trained)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"prompts.sketch", "prompts.photo", "visual.ln_post.weight", "visual.ln_pre.bias"} <= changed
    assert changed <= trainable  # the frozen CLIP (text buffer and logit scale included) is bit-identical


def test_the_fine_grained_model_shares_one_prompt_between_the_domains(method: ClipPrompt, data: TrainSplit,
                                                                     images) -> None:
    """The paper's fine-grained model: one prompt set for sketches and photos, so the two encoders are one."""
    shared = ClipPrompt(replace(method.config, shared_prompts=True))
    net = _net(shared, data).eval()
    assert set(net.prompts) == {"shared"} and net.prompt("sketch") is net.prompt("photo")
    same = images["photo"][:3].float() / 255
    with torch.no_grad():
        assert torch.allclose(net.embed(standardise(same), "sketch"), net.embed(standardise(same), "photo"))
        apart = _net(method, data).eval()
        assert not torch.allclose(apart.embed(standardise(same), "sketch"), apart.embed(standardise(same), "photo"))
    groups = shared.param_groups(net, 1.0)
    assert [p for p in groups[0]["params"]] == [net.prompts["shared"]]


def test_backbone_patch_tokens_feed_the_vit(tmp_path: Path) -> None:
    """Variant B: EfficientNet-Lite0 cut at stage 2 (stride 8) + a 1×1 projection replaces the pixel patches."""
    architecture = {**TINY_CLIP_ARCHITECTURE, "patch_tokens": {"backbone": "timm:efficientnet_lite0",
                                                  "pretrained": "package:efficientnet_lite0", "feature_level": 2}}
    torch.manual_seed(0)
    folder = save_clip_folder(tmp_path / "clip", build_clip(architecture), architecture, {})
    method = ClipPrompt(config(ClipPromptConfig, "clip_prompt.model", clip=str(folder), prompts=2))
    method.use_categories(["a", "b"])
    net = method.build(2).eval()
    assert type(net.visual.conv1).__name__ == "BackbonePatchTokens" and net.grid == (4, 4)
    assert not any(p.requires_grad for p in net.visual.conv1.parameters())  # part of the frozen CLIP
    with torch.no_grad():
        embedding = net.embed(torch.randn(3, 3, 32, 32), "photo")
    assert embedding.shape == (3, 16) and torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(BackboneError, match="stride"):
        build_clip({**architecture, "vision_cfg": {**TINY_CLIP_ARCHITECTURE["vision_cfg"], "patch_size": 16}})


def test_save_load_round_trip_is_self_contained(method: ClipPrompt, data: TrainSplit, images,
                                                tmp_path: Path) -> None:
    net, _ = train(method, TINY, RUN, data, tmp_path / "state", net=_net(method, data), progress=False,
                   stop_after_steps=1)
    copy = Path(shutil.copytree(method.config.clip, tmp_path / "clip"))
    moved = ClipPrompt(replace(method.config, clip=str(copy)))
    moved.use_categories(data.categories)
    saved = moved.build(data.num_classes)  # fills the architecture from the CLIP folder
    saved.load_state_dict(net.state_dict())
    facts = {"dataset": "six", "train_categories": data.categories, "data_fingerprint": data.fingerprint}
    save_method(tmp_path / "ckpt", moved, saved, facts)
    shutil.rmtree(copy)  # the model folder must not need the CLIP folder any more
    config = read_config(tmp_path / "ckpt")
    assert config["config"]["architecture"]["embed_dim"] == 16 and config["embedding_dim"] == 16
    assert config["preprocess"]["sketch"]["image_size"] == 32 and config["preprocess"]["photo"]["mean"][0] < 0.5
    pictures = [Image.open(path) for path in data.sketch_paths[:4]]
    before = moved.export(saved.eval()).encode_sketches(pictures)
    loaded = load_model(tmp_path / "ckpt")
    assert np.array_equal(before, loaded.encode_sketches(pictures))
    assert np.array_equal(before, loaded.encode_batch(images["sketch"][:4], "sketch"))
    assert np.allclose(np.linalg.norm(before, axis=1), 1, atol=1e-5)
    photos = loaded.encode_batch(images["photo"][:4], "photo")
    assert not np.allclose(photos, loaded.encode_batch(images["photo"][:4], "sketch"))  # per-domain prompts


def test_explanation_patches_lie_in_the_grids(method: ClipPrompt, data: TrainSplit) -> None:
    model = method.export(_net(method, data).eval())
    assert isinstance(model, MatchExplainer) and model.capabilities == {"explain"}
    sketch, photo = Image.open(data.sketch_paths[0]), Image.open(data.photo_paths[0])
    explanation = model.explain(sketch, photo, top=5)
    cosine = float((model.encode([sketch], "sketch") @ model.encode([photo], "photo").T)[0, 0])
    assert explanation.score == pytest.approx(cosine, abs=1e-5)
    assert explanation.sketch_grid == explanation.photo_grid == (4, 4)
    assert 0 < len(explanation.matches) <= 5  # MatchExplanation itself checks every patch lies in its grid
    weights = [m.weight for m in explanation.matches]
    assert weights == sorted(weights, reverse=True) and weights[0] > 0
    assert explanation.sketch_heatmap.max() == pytest.approx(1.0) and explanation.photo_heatmap.min() >= 0
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())


def test_patch_shuffle_permutes_cells_and_negatives_differ() -> None:
    first, second = draw_permutations(64, 2, torch.Generator().manual_seed(0))
    assert not (first == second).all(dim=1).any()
    assert torch.equal(first.sort(dim=1).values, torch.arange(4).expand(64, -1))
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    identity = torch.arange(4).expand(2, -1)
    assert torch.equal(patch_shuffle(images, identity, 2), images)
    swapped = patch_shuffle(images, torch.tensor([[1, 0, 2, 3], [3, 2, 1, 0]]), 2)
    assert torch.equal(swapped[0, :, :4, :4], images[0, :, :4, 4:]) and torch.equal(swapped[1, :, 4:, 4:],
                                                                                    images[1, :, :4, :4])
    assert torch.equal(swapped.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)


def test_losses_on_hand_made_cases() -> None:
    axes = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    assert category_triplet(axes[[0, 0, 2, 2]], axes[[0, 0, 2, 2]], labels, labels, 0.2) == 0
    assert category_triplet(axes[[0, 0, 2, 2]], axes[[2, 2, 0, 0]], labels, labels, 0.2) > 1
    same = torch.eye(4, dtype=torch.bool)
    # the same separation in both categories: uniform, no penalty; different separations: penalised
    even = relative_distance_regulariser(axes, axes, same, labels, labels, 0.1)
    photos = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]]),
                                           dim=1)
    uneven = relative_distance_regulariser(axes, photos, same, labels, labels, 0.1)
    assert float(even) == pytest.approx(0, abs=1e-7) and float(uneven) > 0.1
    texts = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    unique = contrastive_loss(texts, texts, torch.tensor(10.0), torch.arange(4))
    from open_clip.loss import ClipLoss

    assert float(unique) == pytest.approx(float(ClipLoss()(texts, texts, torch.tensor(10.0))), abs=1e-6)


def test_build_needs_categories_and_fails_clearly_offline(method: ClipPrompt) -> None:
    with pytest.raises(ValueError, match="names of the 3 seen categories"):
        ClipPrompt(method.config).build(3)
    published = ClipPrompt(config(ClipPromptConfig, "clip_prompt.model", clip="open_clip:ViT-B-32", pretrained="openai"))
    assert published.embedding_dim == 512 and published.preprocess()["photo"].image_size == 224
    assert published.architecture()["quick_gelu"] is True  # OpenAI's weights were trained with QuickGELU
    published.use_categories(["a", "b"])
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE=1 asks for no downloads"):
        published.build(2)
    with pytest.raises(BackboneError, match="not a CLIP folder"):
        ClipPrompt(config(ClipPromptConfig, "clip_prompt.model", clip="artifacts/clip/nowhere")).preprocess()


def test_standardise_matches_the_declared_preprocessing(method: ClipPrompt) -> None:
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(standardise(pixels.float() / 255), method.preprocess()["sketch"].normalize(pixels),
                          atol=1e-6)


def test_the_pipeline_clip_follows_train_dataset() -> None:
    """``clip: pretrain_clip`` is the CLIP pretrain_clip trained on ``train.dataset``, whichever dataset that is."""
    from helpers import PARAMS

    from sbir import paths
    from stages.train import method_settings

    for dataset in ("openmoji_zs", "sketchy25"):
        method, _ = method_settings(PARAMS.replaced("train", {"dataset": dataset}), "clip_prompt")
        assert method.config.clip == str(paths.pretrained_clip_dir(dataset))
    folder = PARAMS.replaced("clip_prompt.model", {"clip": "some/folder"})
    assert method_settings(folder, "clip_prompt")[0].config.clip == "some/folder"
