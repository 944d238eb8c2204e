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


# Which loading path a weights setting takes (no network: the library calls are recorded, not made), and a local
# file whose architecture is neither stated nor recognised, or that does not fit, is a clear error.

class _Recorded(Exception):
    pass


def _recorder(calls: list) -> object:
    def create_model(name, pretrained=None, **kwargs):
        calls.append((name, pretrained, kwargs.get("force_quick_gelu")))
        raise _Recorded
    return create_model


def test_a_tag_downloads_through_the_library_and_a_local_file_is_loaded_here(monkeypatch, tmp_path) -> None:
    import open_clip

    from models.clip.tower import load_named_clip

    calls: list = []
    monkeypatch.setattr(timm, "create_model", _recorder(calls))
    monkeypatch.setattr(open_clip, "create_model", _recorder(calls))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(BackboneError, match="the download failed"):
        create_backbone("timm:vit_base_patch16_224", pretrained="sam_in1k", image_size=224)
    with pytest.raises(BackboneError, match="the download failed"):
        load_named_clip("ViT-B-32", "openai")
    local = tmp_path / "weights.safetensors"
    local.write_bytes(b"0")
    with pytest.raises(BackboneError):
        create_backbone("timm:vit_base_patch16_224", pretrained=str(local), image_size=224)
    assert calls == [("vit_base_patch16_224.sam_in1k", True, None),   # timm's tag: the hub download
                     ("ViT-B-32", "openai", True),                    # open_clip's tag, QuickGELU from its config
                     ("vit_base_patch16_224", False, None)]           # a local file: built bare, loaded here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE=1 asks for no downloads.*HF_HUB_OFFLINE=0"):
        load_named_clip("ViT-B-32", "openai")


def test_open_clip_activation_is_stated_recognised_or_refused(monkeypatch, tmp_path) -> None:
    import hashlib

    from models import backbones
    from models.backbones import known_weight_files, uses_quick_gelu

    assert known_weight_files()["40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"] == (
        "ViT-B-32", "openai", True)  # OpenAI's ViT-B/32 file, known by the checksum in its URL
    assert uses_quick_gelu("ViT-B-32", "openai") and not uses_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    unknown = tmp_path / "ViT-B-32.pt"
    unknown.write_bytes(b"a copy of someone's CLIP")
    with pytest.raises(BackboneError, match=r"activation .* is unknown.*open_clip:ViT-B-32-quickgelu.*"
                                            r"quick_gelu: false"):
        uses_quick_gelu("ViT-B-32", str(unknown))  # plain GELU would load silently and retrieve worse
    assert uses_quick_gelu("ViT-B-32-quickgelu", str(unknown)) is True  # stated by the name
    assert uses_quick_gelu("ViT-B-32", str(unknown), stated=False) is False  # stated in the params
    digest = hashlib.sha256(unknown.read_bytes()).hexdigest()
    monkeypatch.setattr(backbones, "known_weight_files", lambda: {digest: ("ViT-B-32", "openai", True)})
    assert uses_quick_gelu("ViT-B-32", str(unknown)) is True  # recognised by its checksum
    with pytest.raises(BackboneError, match="'openai' weights of open_clip:ViT-B-32, not of open_clip:ViT-B-16"):
        uses_quick_gelu("ViT-B-16", str(unknown))


def test_a_local_file_that_does_not_fit_names_what_is_wrong(tmp_path) -> None:
    from safetensors.torch import save_file

    from models.clip.tower import load_named_clip

    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    reshaped = {**state, "conv1.weight": torch.zeros(8, 3, 7, 7)}
    save_file(reshaped, str(tmp_path / "reshaped.safetensors"))
    with pytest.raises(BackboneError, match=r"reshaped.safetensors: does not fit timm:resnet18; other shapes: "
                                            r"\['conv1.weight \(8, 3, 7, 7\) \(expected \(64, 3, 7, 7\)\)'\]"):
        create_backbone("timm:resnet18", pretrained=str(tmp_path / "reshaped.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(tmp_path / "part.safetensors"))
    with pytest.raises(BackboneError, match=r"part.safetensors: does not fit timm:resnet18; missing \['layer4"):
        create_backbone("timm:resnet18", pretrained=str(tmp_path / "part.safetensors"))
    save_file({"visual.proj": torch.zeros(2, 2)}, str(tmp_path / "clip.safetensors"))
    with pytest.raises(BackboneError, match=r"clip.safetensors: does not fit open_clip:ViT-B-32-quickgelu: "):
        load_named_clip("ViT-B-32-quickgelu", str(tmp_path / "clip.safetensors"))
