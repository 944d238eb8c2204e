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
from models.interface import MatchExplainer, PairScorer, PatchSynthesizer
from models.method import Batch
from models.registry import lookup
from models.zse import ZSE, ZSEConfig, batch_hard_triplet, zse_losses
from sbir.explanations import assemble_patches
from helpers import config

TINY = config(TrainConfig, "dsn.train", epochs=1, batch_size=8, lr=2e-3)
RUN = config(RuntimeConfig, "train.runtime", checkpoint_every=2, num_threads=1, workers=0, cache="memory")
# random weights at 32 px: the EfficientNet-Lite0 stage-2 map is a 4 x 4 token grid
METHOD = ZSE(config(ZSEConfig, "zse.model", image_size=32, pretrained=None, width=32, depth=1, heads=2, embedding_dim=16,
                       relation_hidden=8))


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
    assert net.grid == (4, 4)
    with torch.no_grad():
        out = net(*(_batch(data, images, 5).sketches, _batch(data, images, 5).photos))
        tokens = net.encode_tokens(_batch(data, images, 5).sketches, "sketch")
    assert out["sketch"].shape == out["photo"].shape == (5, 16)
    assert torch.allclose(out["sketch"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert out["logits"].shape == (10, data.num_classes)
    assert out["relation"].shape == (10,) and ((out["relation"] > 0) & (out["relation"] < 1)).all()
    assert tokens.shape == (5, 2 + 16, 32)  # [cls], [ret], 4 x 4 patches


def test_triplet_and_loss_weights_on_hand_made_cases() -> None:
    sketch = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    assert float(batch_hard_triplet(sketch, sketch, labels, labels, 0.2)) == 0.0  # perfect: positives at 1, negatives 0
    swapped = sketch.flip(0)
    assert float(batch_hard_triplet(sketch, swapped, labels, labels, 0.2)) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="unknown loss term"):
        net = ZSE(replace(METHOD.config, loss_weights={"nonsense": 1.0})).build(2)
        out = {"sketch": sketch, "photo": sketch, "logits": torch.zeros(4, 2), "relation": torch.full((4,), 0.5)}
        zse_losses(net, out, Batch(sketch, sketch, labels, labels, torch.eye(2, dtype=torch.bool)))


def test_every_loss_term_decreases_on_a_tiny_batch(data: TrainSplit, images) -> None:
    torch.manual_seed(0)
    net = build_net(METHOD, TINY, data.num_classes).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = _batch(data, images)
    history = []
    for _ in range(30):
        terms = zse_losses(net, net(batch.sketches, batch.photos), batch)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append({name: float(value.detach()) for name, value in terms.items()})
    for name in ("triplet", "instance", "classification", "relation", "total"):
        assert history[-1][name] < history[0][name], (name, history[0][name], history[-1][name])


def test_param_groups_slow_down_only_the_pretrained_tokenizer(data: TrainSplit) -> None:
    net = METHOD.build(data.num_classes)
    groups = METHOD.param_groups(net, 1.0)
    assert [group["lr"] for group in groups] == [pytest.approx(METHOD.config.tokenizer_lr_factor), 1.0]
    tokenizer = {id(p) for p in net.tokenizer.net.parameters()}
    assert {id(p) for p in groups[0]["params"]} == tokenizer
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
    explanation = model.explain(sketch, photos[0], top=5)
    assert explanation.sketch_grid == explanation.photo_grid == (4, 4)
    assert 1 <= len(explanation.matches) <= 5 and explanation.sketch_heatmap.shape == (4, 4)
    assert explanation.sketch_heatmap.max() == pytest.approx(1.0)
    weights = [match.weight for match in explanation.matches]
    assert weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)
    pair = [model.preprocess(d).load(image)[None] for d, image in (("sketch", sketch), ("photo", photos[0]))]
    assert explanation.score == pytest.approx(float(model.score_pairs(*pair)[0]), abs=1e-5)


def test_synthesis_is_assembled_from_the_matched_gallery_patches(data: TrainSplit, tmp_path: Path) -> None:
    model = METHOD.export(_trained(data, tmp_path))
    sketch, photos = _pictures(data)
    synthesis = model.synthesize(sketch, photos, size=64)
    assert synthesis.image.size == (64, 64) and synthesis.sources.shape == (4, 4, 3)
    assert synthesis.num_photos == 3 and set(synthesis.sources[..., 0].ravel()) <= {0, 1, 2}
    # each 16-pixel cell is the named photo's named cell
    picture = np.asarray(synthesis.image)
    for r in range(4):
        for c in range(4):
            index, source_r, source_c = synthesis.sources[r, c]
            source = np.asarray(assemble_patches([photos[index]], np.array([[[0, source_r, source_c]]]), 16))
            expected = np.asarray(assemble_patches([photos[index]], np.full((4, 4, 3), 0) + [0, source_r, source_c],
                                                   64))[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]
            assert source.shape == (16, 16, 3)
            assert np.array_equal(picture[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16], expected)
    with pytest.raises(ValueError, match="at least one gallery photo"):
        model.synthesize(sketch, [])


def test_a_vit_tokenizer_builds_the_published_architecture_small() -> None:
    method = ZSE(config(ZSEConfig, "zse.model", backbone="timm:vit_tiny_patch16_224", pretrained=None, image_size=32, feature_level=None,
                           heads=3, embedding_dim=16))
    net = method.build(3).eval()
    assert net.grid == (2, 2) and net.encoder is None
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert out["sketch"].shape == (2, 16) and out["logits"].shape == (4, 3)
    assert method.export(net).explain(Image.new("RGB", (32, 32), "white"),
                                      Image.new("RGB", (32, 32), "white")).sketch_grid == (2, 2)


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
