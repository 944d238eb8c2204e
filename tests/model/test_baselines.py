"""Behaviour of the model interface, the backbone factory and the baselines (untrained models)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from models.backbones import BackboneError, create_backbone
from models.interface import Preprocess
from models.checkpoint import CheckpointError, load_model, save_baseline
from models.registry import available, create_model
from sbir.config import ConfigError
from sbir.ranking import l2_normalize
from helpers import params_section


def _drawing(shape: str, size: int = 96, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (size, size), "white")
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((15, 15, 80, 80), outline="black", width=4)
    else:
        draw.line((10, 10, 85, 85), fill="black", width=4)
        draw.line((10, 85, 85, 10), fill="black", width=4)
    return image


@pytest.mark.parametrize("name", ["baseline_random", "baseline_hog"])
def test_baselines_give_unit_embeddings_of_one_dimension(name: str) -> None:
    model = create_model(name, params_section(name))
    images = [_drawing("circle"), _drawing("cross"), _drawing("circle", 50, "L")]
    sketches, photos = model.encode_sketches(images), model.encode_photos(images)
    assert sketches.shape == photos.shape == (3, model.embedding_dim)
    assert sketches.dtype == np.float32
    assert np.allclose(np.linalg.norm(sketches, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(photos, axis=1), 1, atol=1e-5)
    assert model.encode_sketches([]).shape == (0, model.embedding_dim)
    assert model.describe()["name"] == name


def test_hog_matches_a_sketch_to_the_photo_of_the_same_shape() -> None:
    model = create_model("baseline_hog", params_section("baseline_hog"))
    photos = [_drawing("circle"), _drawing("cross")]
    # a filled colour disc and a cross photo; sketches are the outlines
    filled = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(filled).ellipse((15, 15, 80, 80), fill=(200, 40, 40))
    scores = model.encode_sketches([_drawing("circle"), _drawing("cross")]) @ model.encode_photos(
        [filled, photos[1]]).T
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_random_baseline_is_seeded() -> None:
    image = [_drawing("circle")]
    first = create_model("baseline_random", params_section("baseline_random", seed=3)).encode_photos(image)
    again = create_model("baseline_random", params_section("baseline_random", seed=3)).encode_photos(image)
    other = create_model("baseline_random", params_section("baseline_random", seed=4)).encode_photos(image)
    assert np.array_equal(first, again) and not np.allclose(first, other)


def test_preprocess_pads_to_square_and_flattens_transparency() -> None:
    preprocess = Preprocess(image_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    wide = Image.new("RGBA", (64, 16), (0, 0, 0, 0))  # fully transparent: must become white
    tensor = preprocess(wide)
    assert tensor.shape == (3, 32, 32) and torch.allclose(tensor, torch.ones_like(tensor))
    black = preprocess(Image.new("L", (64, 16), 0))
    assert black[:, 16, 16].sum() == 0 and black[:, 0, 16].min() == 1  # content centred, white padding


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0, 0]])


def test_backbone_factory_local_checkpoint_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_backbone("timm:resnet18")
    save_file(source.module.state_dict(), str(tmp_path / "weights.safetensors"))
    loaded = create_backbone("timm:resnet18", pretrained=str(tmp_path / "weights.safetensors"))
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source.module.eval()(batch), loaded.module.eval()(batch))
    assert loaded.feature_dim == 512


def test_backbone_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="asks for no downloads.*local path"):
        create_backbone("timm:resnet18", pretrained="a1_in1k")
    with pytest.raises(BackboneError, match="no architecture"):
        create_backbone("timm:not_a_net")
    with pytest.raises(BackboneError, match="checkpoint file not found"):
        create_backbone("timm:resnet18", pretrained=str(tmp_path / "absent.safetensors"))
    with pytest.raises(BackboneError, match="unknown backbone library"):
        create_backbone("keras:resnet")
    with pytest.raises(BackboneError, match="asks for no downloads.*local path"):
        create_backbone("open_clip:ViT-B-32", pretrained="openai")


def test_registry_and_model_folder_errors(tmp_path: Path) -> None:
    assert {"baseline_random", "baseline_hog"} <= set(available("baseline"))
    with pytest.raises(KeyError, match="unknown baseline 'nope'.*baseline_hog"):
        create_model("nope", kind="baseline")
    with pytest.raises(ConfigError, match=r"baseline_hog.image_size: expected int, got 'big'"):
        create_model("baseline_hog", params_section("baseline_hog", image_size="big"))
    with pytest.raises(CheckpointError, match="not a model folder"):
        load_model(tmp_path / "nonexistent")
    folder = save_baseline(tmp_path / "hog", "baseline_hog", params_section("baseline_hog", image_size=48),
                           create_model("baseline_hog", params_section("baseline_hog", image_size=48)))
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"schema_version": 2', '"schema_version": 7'))
    with pytest.raises(CheckpointError, match="schema version 7 is not supported.*\\[1, 2\\]"):
        load_model(folder)
    (folder / "config.json").write_text(config.replace('"schema_version": 2', '"schema_version": 1'))
    assert load_model(folder).name == "hog"  # a v1 baseline folder is a v2 one (named by its folder)
    (folder / "config.json").write_text(config.replace('"baseline_hog"', '"baseline_sift"'))
    with pytest.raises(CheckpointError, match="unknown baseline 'baseline_sift'; supported"):
        load_model(folder)


@pytest.mark.parametrize("name", ["baseline_random", "baseline_hog"])
def test_baseline_folders_load_to_the_same_model(name: str, tmp_path: Path) -> None:
    model = create_model(name, params_section(name, image_size=48))
    loaded = load_model(save_baseline(tmp_path / name, name, params_section(name, image_size=48), model))
    images = [_drawing("circle"), _drawing("cross")]
    assert np.array_equal(model.encode_photos(images), loaded.encode_photos(images))
    assert loaded.preprocess("sketch").image_size == 48
    stored = sorted(p.name for p in (tmp_path / name).iterdir())
    assert stored == (["config.json", "model.safetensors"] if name == "baseline_random" else ["config.json"])
