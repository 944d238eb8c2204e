"""ZSE-SBIR on tiny data (CPU, seconds): shapes, losses, training, checkpoints, relation scores, explanations
and patch-replacement synthesis."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_model, save_method
from models.data import TrainSplit, decode_all
from models.engine import RuntimeConfig, TrainConfig, build_net, train
from models.interface import GridScorer, MatchExplainer, PairScorer, PatchSynthesizer
from models.method import Batch
from models.registry import lookup
from models.zse import (ZSE, CrossAttentionLayer, RelationNetwork, ScaleEmbedding, ZSEConfig, quadruplets,
                        relation_hidden, zse_losses)
from sbir.config import ConfigError
from sbir.explanations import assemble_patches
from helpers import SMALL_MODELS, config

TINY = config(TrainConfig, "zse.train", epochs=1, batch_size=8, lr=2e-3)
RUN = config(RuntimeConfig, "train.runtime", checkpoint_every=2, num_threads=1, workers=0, cache="memory")
# random weights at 32 px: the EfficientNet-Lite0 stage-2 map is a 4 x 4 token grid, 2 x 2 relation anchors
METHOD = ZSE(config(ZSEConfig, "zse.model", pretrained=None, **SMALL_MODELS["zse"]["model"]))


@pytest.fixture(scope="module")
def images(data: TrainSplit) -> dict[str, torch.Tensor]:
    preprocess = METHOD.preprocess()
    return {"sketch": decode_all(data.sketch_paths, preprocess["sketch"], workers=0),
            "photo": decode_all(data.photo_paths, preprocess["photo"], workers=0)}


def _batch(data: TrainSplit, images: dict[str, torch.Tensor], n: int = 8) -> Batch:
    photo_idx = data.sketch_to_photo[:n]
    return Batch(images["sketch"][:n].float() / 255, images["photo"][photo_idx].float() / 255,
                 data.sketch_labels[:n], data.photo_labels[photo_idx], photo_idx[:, None] == photo_idx[None, :])


def test_registered_and_shapes(data: TrainSplit, images) -> None:
    assert lookup("zse") is ZSE
    net = build_net(METHOD, TINY, data.num_classes).eval()
    assert net.grid == (4, 4) and net.relation_grid == (2, 2) and METHOD.embedding_dim == 32
    batch = _batch(data, images, 5)
    with torch.no_grad():
        out = METHOD.forward(net, batch)
        tokens = net.encode_tokens(batch.sketches, "sketch")
    assert tokens.shape == (5, 1 + 16, 32)  # the retrieval token, then 4 x 4 patches
    assert out["sketch"].shape == out["photo"].shape == out["anchor"].shape == out["negative"].shape == (5, 32)
    assert torch.allclose(out["sketch"], torch.nn.functional.normalize(tokens[:, 0], dim=1))  # Ret: the [cls]
    assert out["relation"].shape == (10,) and ((out["relation"] > 0) & (out["relation"] < 1)).all()


def test_scale_embedding_is_the_papers_tokenizer_branch() -> None:
    convs = [m for m in ScaleEmbedding(16, 768).seq if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (3, 64, 7, 2, 3), (64, 128, 3, 2, 1), (128, 256, 3, 2, 1), (256, 768, 3, 2, 1)]
    assert all(c.bias is None for c in convs)
    assert ScaleEmbedding(16, 768)(torch.rand(1, 3, 224, 224)).shape == (1, 196, 768)
    assert [c.out_channels for c in ScaleEmbedding(8, 32).seq if isinstance(c, torch.nn.Conv2d)] == [64, 128, 32]
    with pytest.raises(ConfigError, match="power of two"):
        ScaleEmbedding(12, 32)
    net = METHOD.build(3).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        patches = net.tokenizer.project(net.tokenizer.net(images)).flatten(2).transpose(1, 2)
        expected = (patches + net.tokenizer.scale(images)) / 2  # the two branches averaged
        assert torch.allclose(net.tokenizer(images), expected)


def test_relation_network_has_the_papers_sizes_and_output() -> None:
    sizes = {anchors: [m.in_features for m in RelationNetwork(anchors, 0.1).mlp if isinstance(m, torch.nn.Linear)]
             for anchors in (49, 144, 196)}
    assert sizes == {49: [2401, 343, 49], 144: [20736, 1728, 144], 196: [38416, 2744, 196]}
    assert relation_hidden(49) == 343
    network = RelationNetwork(4, 0.1).eval()
    cosine = torch.rand(3, 4, 4) * 2 - 1
    first, _, _, second, _, _, last = network.mlp
    by_hand = torch.sigmoid(last(torch.relu(second(torch.relu(first(cosine.reshape(3, 16)))))))[:, 0]
    assert torch.allclose(network(cosine), by_hand)


def test_token_reduction_keeps_every_token_in_its_grid_place() -> None:
    """The 2 x 2 convolution sees the four tokens of each anchor cell (the release's view mixes tokens)."""
    net = METHOD.build(3).eval()
    tokens = torch.rand(2, 16, 32)
    weight, bias = net.reduce.weight, net.reduce.bias  # (16, 32, 2, 2)
    with torch.no_grad():
        reduced = net.reduced(tokens)
    assert reduced.shape == (2, 4, 16)
    for anchor_row in range(2):
        for anchor_col in range(2):
            by_hand = bias.clone()
            for dr in range(2):
                for dc in range(2):
                    token = tokens[1, (2 * anchor_row + dr) * 4 + 2 * anchor_col + dc]
                    by_hand = by_hand + weight[:, :, dr, dc] @ token
            assert torch.allclose(reduced[1, anchor_row * 2 + anchor_col], by_hand, atol=1e-5)


def test_cross_attention_queries_the_other_image_over_its_own_values() -> None:
    torch.manual_seed(0)
    layer = CrossAttentionLayer(8, 1, 16, 0.1).eval()
    own, other = torch.rand(1, 5, 8), torch.rand(1, 5, 8)
    w_q, w_k, w_v = layer.attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = layer.attention.in_proj_bias.chunk(3)
    q, k, v = own @ w_q.T + b_q, other @ w_k.T + b_k, own @ w_v.T + b_v
    attended = layer.attention.out_proj(torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, dim=-1) @ v)
    tokens = layer.norm_attention(own + attended)
    by_hand = layer.norm_feed_forward(tokens + layer.feed_forward(tokens))
    assert torch.allclose(layer(own, other), by_hand, atol=1e-5)
    net = METHOD.build(3)
    assert net.cross.sketch_layers[0] is not net.cross.photo_layers[0]  # one layer per direction, not shared
    assert len(net.cross.sketch_layers) == METHOD.config.cross_layers == 1


def test_quadruplets_take_a_second_sketch_and_an_other_category_photo() -> None:
    labels = torch.tensor([0, 0, 1, 2])
    negative_sketch, negative_photo, valid = quadruplets(labels, labels)
    assert negative_sketch.tolist() == [1, 0, 2, 3]  # the other sketch of category 0; alone: itself
    assert negative_photo.tolist() == [2, 2, 3, 0]  # the next photo of another category
    assert valid.all()
    assert not quadruplets(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))[2].any()


def test_losses_are_the_papers_on_hand_made_cases() -> None:
    net = METHOD.build(3)
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[0.0, 0.5], [1.0, 1.0]])
    negative = torch.tensor([[0.0, 1.0], [4.0, 5.0]])
    relation = torch.tensor([0.9, 0.5, 0.2, 0.1])  # positive pairs, then negative pairs
    labels = torch.tensor([0, 1])
    batch = Batch(torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 1, 1), labels, labels, torch.eye(2, dtype=torch.bool))
    out = {"anchor": anchor, "positive": positive, "negative": negative, "relation": relation,
           "sketch": torch.eye(2), "photo": torch.eye(2)}
    terms = zse_losses(net, out, batch)
    triplet = (max(0.0, 0.5 - 1.0 + 1.0) + max(0.0, 0.0 - 5.0 + 1.0)) / 2  # Euclidean, margin 1
    relation_mse = ((0.9 - 0.99) ** 2 + (0.5 - 0.99) ** 2 + (0.2 - 0.01) ** 2 + (0.1 - 0.01) ** 2) / 4
    assert float(terms["triplet"]) == pytest.approx(triplet, abs=1e-5)
    assert float(terms["relation"]) == pytest.approx(relation_mse, abs=1e-6)
    assert float(terms["total"]) == pytest.approx(2 * triplet + 4 * relation_mse, abs=1e-5)  # instance: weight 0
    same = torch.tensor([0, 0])  # no other-category photo: no triplet, the negative pairs' scores left out
    terms = zse_losses(net, out, Batch(batch.sketches, batch.photos, same, same, batch.same_instance))
    assert float(terms["triplet"]) == 0.0
    assert float(terms["relation"]) == pytest.approx(((0.9 - 0.99) ** 2 + (0.5 - 0.99) ** 2) / 2, abs=1e-6)
    with pytest.raises(ConfigError, match="unknown loss term"):
        zse_losses(ZSE(replace(METHOD.config, loss_weights={"nonsense": 1.0})).build(2), out, batch)


def test_every_loss_term_decreases_on_a_tiny_batch(data: TrainSplit, images) -> None:
    torch.manual_seed(0)
    method = ZSE(replace(METHOD.config, loss_weights={"triplet": 2.0, "relation": 4.0, "instance": 1.0}))
    net = build_net(method, TINY, data.num_classes).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = _batch(data, images)
    history = []
    for _ in range(30):
        terms = zse_losses(net, method.forward(net, batch), batch)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append({name: float(value.detach()) for name, value in terms.items()})
    for name in ("triplet", "instance", "relation", "total"):
        assert history[-1][name] < history[0][name], (name, history[0][name], history[-1][name])


def test_param_groups_slow_down_only_the_pretrained_tokenizer(data: TrainSplit) -> None:
    net = METHOD.build(data.num_classes)
    groups = METHOD.param_groups(net, 1.0)
    assert [group["lr"] for group in groups] == [pytest.approx(METHOD.config.tokenizer_lr_factor), 1.0]
    tokenizer = {id(p) for p in net.tokenizer.net.parameters()}
    assert {id(p) for p in groups[0]["params"]} == tokenizer
    assert {id(p) for p in net.tokenizer.scale.parameters()} <= {id(p) for p in groups[1]["params"]}  # learnt anew
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def _trained(data: TrainSplit, tmp_path: Path):
    return train(METHOD, TINY, RUN, data, tmp_path / "state", progress=False, stop_after_steps=3)[0]


def test_save_load_gives_identical_embeddings_and_relation_scores(data: TrainSplit, images, tmp_path: Path) -> None:
    net = _trained(data, tmp_path)
    model = METHOD.export(net)
    assert {"score_pairs", "explain", "synthesize"} <= model.capabilities
    save_method(tmp_path / "ckpt", METHOD, net, {"dataset": "six", "train_categories": data.categories})
    loaded = load_model(tmp_path / "ckpt")
    assert isinstance(loaded, PairScorer) and isinstance(loaded, MatchExplainer) and isinstance(loaded, PatchSynthesizer)
    for domain in ("sketch", "photo"):
        assert np.array_equal(model.encode_batch(images[domain][:4], domain),
                              loaded.encode_batch(images[domain][:4], domain))
    scores = loaded.score_pairs(images["sketch"][:4], images["photo"][:4])
    assert np.array_equal(scores, model.score_pairs(images["sketch"][:4], images["photo"][:4]))
    assert scores.shape == (4,) and ((scores > 0) & (scores < 1)).all()


def test_rn_mode_scores_every_pair_as_the_pair_scorer_does(data: TrainSplit, images, tmp_path: Path) -> None:
    """The paper's RN mode: every sketch against every photo, in pair batches smaller than the grid."""
    model = METHOD.export(_trained(data, tmp_path))
    assert isinstance(model, GridScorer)
    sketches, photos = images["sketch"][:3], images["photo"][:5]
    model.pair_batch = 4  # 15 pairs in four batches
    grid = model.score_grid(sketches, photos)
    assert grid.shape == (3, 5)
    for s in range(3):
        pairs = model.score_pairs(sketches[s:s + 1].expand(5, -1, -1, -1), photos)
        assert np.allclose(grid[s], pairs, atol=1e-6)


def _pictures(data: TrainSplit) -> tuple[Image.Image, list[Image.Image]]:
    with Image.open(data.sketch_paths[0]) as sketch:
        sketch = sketch.convert("RGB")
    photos = []
    for path in data.photo_paths[:3]:
        with Image.open(path) as photo:
            photos.append(photo.convert("RGB"))
    return sketch, photos


def test_explanation_points_at_real_patches_and_agrees_with_the_pair_score(data: TrainSplit, tmp_path: Path) -> None:
    model = METHOD.export(_trained(data, tmp_path))
    sketch, photos = _pictures(data)
    explanation = model.explain(sketch, photos[0], top=3)
    assert explanation.sketch_grid == explanation.photo_grid == (2, 2)  # the relation network's anchors
    assert 1 <= len(explanation.matches) <= 3 and explanation.sketch_heatmap.shape == (2, 2)
    assert explanation.sketch_heatmap.max() == pytest.approx(1.0)
    weights = [match.weight for match in explanation.matches]
    assert weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)
    pair = [model.preprocess(d).load(image)[None] for d, image in (("sketch", sketch), ("photo", photos[0]))]
    assert explanation.score == pytest.approx(float(model.score_pairs(*pair)[0]), abs=1e-5)


def test_synthesis_is_assembled_from_the_matched_gallery_patches(data: TrainSplit, tmp_path: Path) -> None:
    model = METHOD.export(_trained(data, tmp_path))
    sketch, photos = _pictures(data)
    synthesis = model.synthesize(sketch, photos, size=64)
    assert synthesis.image.size == (64, 64) and synthesis.sources.shape == (2, 2, 3)
    assert synthesis.num_photos == 3 and set(synthesis.sources[..., 0].ravel()) <= {0, 1, 2}
    # each 32-pixel cell is the named photo's named cell
    picture = np.asarray(synthesis.image)
    for r in range(2):
        for c in range(2):
            index, source_r, source_c = synthesis.sources[r, c]
            expected = np.asarray(assemble_patches([photos[index]], np.full((2, 2, 3), 0) + [0, source_r, source_c],
                                                   64))[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32]
            assert np.array_equal(picture[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32], expected)
    with pytest.raises(ValueError, match="at least one gallery photo"):
        model.synthesize(sketch, [])


def test_a_vit_tokenizer_builds_the_published_architecture_small() -> None:
    """The paper's shape on a tiny ViT: its patch embedding averaged with the scale embedding, its [cls] and blocks,
    a 4 x 4 grid at 64 px reduced to 2 x 2 anchors; the stated width must be the ViT's."""
    small = {**SMALL_MODELS["zse"]["model"], "width": 192, "heads": 3}
    method = ZSE(config(ZSEConfig, "zse.model", backbone="timm:vit_tiny_patch16_224", pretrained=None,
                        feature_level=None, **{**small, "image_size": 64}))
    net = method.build(3).eval()
    assert net.grid == (4, 4) and net.relation_grid == (2, 2) and net.encoder is None
    with torch.no_grad():
        images = torch.rand(2, 3, 64, 64)
        vit = net.tokenizer.net
        assert torch.allclose(net.tokenizer(images), (vit.patch_embed(images) + net.tokenizer.scale(images)) / 2)
        out = method.forward(net, Batch(images, images, torch.tensor([0, 1]), torch.tensor([0, 1]),
                                        torch.eye(2, dtype=torch.bool)))
    assert out["sketch"].shape == (2, 192) and out["relation"].shape == (4,)
    assert method.export(net).explain(Image.new("RGB", (64, 64), "white"),
                                      Image.new("RGB", (64, 64), "white")).sketch_grid == (2, 2)
    with pytest.raises(ConfigError, match="192 wide"):
        ZSE(replace(method.config, width=32)).build(3)


def test_re_scoring_encodes_each_distinct_image_once(data: TrainSplit, images, tmp_path: Path) -> None:
    """A re-ranked top-k is one sketch against k photos, and the same gallery photos come back query after query:
    each distinct image is encoded once, and the scores equal those of a fresh model."""
    model = METHOD.export(_trained(data, tmp_path))
    encoded: list[int] = []
    original = model._tokens
    model._tokens = lambda batch, domain: (encoded.append(len(batch)), original(batch, domain))[1]
    sketch = images["sketch"][:1].expand(4, -1, -1, -1)
    first = model.score_pairs(sketch, images["photo"][:4])
    assert encoded == [1, 4]  # the sketch once, the four photos once
    again = model.score_pairs(images["sketch"][1:2].expand(4, -1, -1, -1), images["photo"][:4])
    assert encoded == [1, 4, 1]  # the photos come from the cache
    fresh = METHOD.export(model.net)
    assert np.allclose(first, fresh.score_pairs(sketch, images["photo"][:4]), atol=1e-6)
    assert np.allclose(again, fresh.score_pairs(images["sketch"][1:2].expand(4, -1, -1, -1), images["photo"][:4]),
                       atol=1e-6)
