"""ImageNet weights shipped as packages: `pretrained: package:efficientnet_lite0`, and the baseline built on them."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from models.backbones import BackboneError, create_backbone, map_in_order, package_state_dict
from models.interface import Preprocess
from sbir.datasets.openmoji import openmoji_svg_dir
from sbir.datasets.strokes import render_photo
from helpers import params_section

IMAGENET_UMBRELLA, IMAGENET_BANANA = 879, 954


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    net.load_state_dict(package_state_dict("efficientnet_lite0", "efficientnet_lite0"))
    return net.eval()


def _photo(code: str) -> torch.Tensor:
    image = render_photo((openmoji_svg_dir() / f"{code}.svg").read_text(), 224)
    return Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(image)[None]


def test_mapped_weights_recognise_imagenet_objects(classifier) -> None:
    with torch.no_grad():
        assert int(classifier(_photo("2602")).argmax()) == IMAGENET_UMBRELLA  # OpenMoji ☂ is ImageNet "umbrella"
        assert int(classifier(_photo("1F34C")).argmax()) == IMAGENET_BANANA


def test_backbone_from_the_package_is_the_classifier_without_its_head(classifier) -> None:
    backbone = create_backbone("timm:efficientnet_lite0", pretrained="package:efficientnet_lite0", image_size=96)
    assert backbone.preprocess.mean == pytest.approx((0.485, 0.456, 0.406)) and backbone.feature_dim == 1280
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = classifier.forward_head(classifier.forward_features(images), pre_logits=True)
        assert torch.allclose(backbone.module.eval()(images), expected, atol=1e-6)
    cut = create_backbone("timm:efficientnet_lite0", pretrained="package:efficientnet_lite0", image_size=96,
                          features_only=True, out_indices=(2,))
    first = dict(cut.module.named_parameters())["features.conv_stem.weight"]
    assert torch.equal(first, classifier.conv_stem.weight)


def test_package_weights_fail_clearly() -> None:
    with pytest.raises(BackboneError, match="unknown weights package 'package:efficientnet_b7'"):
        create_backbone("timm:efficientnet_b0", pretrained="package:efficientnet_b7")
    with pytest.raises(BackboneError, match="holds weights for timm:efficientnet_lite0, not timm:resnet18"):
        create_backbone("timm:resnet18", pretrained="package:efficientnet_lite0")
    with pytest.raises(BackboneError, match=r"tensor 'a' \(2,\) does not fit 'x' \(3,\)"):
        map_in_order({"a": torch.zeros(2)}, {"x": torch.zeros(3)}, "file")
    with pytest.raises(BackboneError, match="1 tensors cannot map onto a model of 2"):
        map_in_order({"a": torch.zeros(2)}, {"x": torch.zeros(2), "y": torch.zeros(1)}, "file")


def test_imagenet_baseline_matches_a_photo_to_its_own_rendering_better_than_to_others() -> None:
    from models.registry import create_model

    model = create_model("baseline_imagenet", params_section("baseline_imagenet", image_size=96))
    from PIL import Image

    photos = [render_photo((openmoji_svg_dir() / f"{c}.svg").read_text(), 96) for c in ("2602", "1F34C", "1F418")]
    shifted = [Image.fromarray(np.roll(np.asarray(p), 4, axis=1)) for p in photos]
    scores = model.encode_photos(shifted) @ model.encode_photos(photos).T
    assert (scores.argmax(axis=1) == np.arange(3)).all()
