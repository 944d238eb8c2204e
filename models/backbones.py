"""Backbones from timm and open_clip behind one factory.

``spec`` names the library and architecture: ``timm:resnet18``, ``open_clip:ViT-B-32``. ``pretrained`` is
None (random initialisation), a library tag (timm ``resnet18.a1_in1k`` or ``True``; open_clip ``openai``,
``laion2b_s34b_b79k``...), or a local checkpoint path. Without network access a tag that needs a download fails
at once with a message that says how to provide the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.interface import Preprocess

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class BackboneError(RuntimeError):
    """A backbone that cannot be built or loaded; the message says what to do."""


@dataclass
class Backbone:
    """A feature extractor: images (B, 3, S, S) → features (B, feature_dim)."""

    module: nn.Module
    feature_dim: int
    preprocess: Preprocess
    spec: str
    pretrained: str | None


def _is_local(pretrained: str | None) -> bool:
    return bool(pretrained) and (Path(str(pretrained)).suffix in {".safetensors", ".pt", ".pth", ".bin"}
                                 or Path(str(pretrained)).exists())


def _offline_help(spec: str, pretrained: str, error: Exception) -> BackboneError:
    return BackboneError(
        f"cannot load pretrained weights '{pretrained}' for '{spec}': {type(error).__name__}: {error}. "
        "This machine is offline (HF_HUB_OFFLINE=1). Download the weights where there is network access "
        "(e.g. with timm or open_clip there), copy the file here, and pass its local path as `pretrained`, "
        "or use pretrained: null to start from random weights.")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch pickle (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _timm_backbone(name: str, pretrained: str | None, image_size: int, **kwargs) -> Backbone:
    import timm

    local = _is_local(pretrained)
    tag = None if local or pretrained in (None, "", False) else pretrained
    model_name = name if tag in (None, True, "true", "True") else f"{name}.{tag}" if "." not in name else name
    try:
        module = timm.create_model(model_name, pretrained=tag is not None, num_classes=0, **kwargs)
    except RuntimeError as error:
        raise BackboneError(f"timm has no architecture '{name}' ({error})") from error
    except Exception as error:  # noqa: BLE001 - hub/network failures come in many types
        raise _offline_help(f"timm:{name}", str(pretrained), error) from error
    if local:
        missing, unexpected = module.load_state_dict(load_state_dict_file(pretrained), strict=False)
        significant = [k for k in missing if not k.startswith(("fc.", "head.", "classifier."))]
        if significant:
            raise BackboneError(f"{pretrained}: does not fit timm:{name}; missing {significant[:5]}...")
    config = module.pretrained_cfg or {}
    if kwargs.get("features_only"):
        module = _LastFeatureMap(module)
    preprocess = Preprocess(image_size=image_size, mean=tuple(config.get("mean", (0.485, 0.456, 0.406))),
                            std=tuple(config.get("std", (0.229, 0.224, 0.225))))
    return Backbone(module, _output_dim(module, image_size), preprocess, f"timm:{name}",
                    str(pretrained) if pretrained else None)


class _LastFeatureMap(nn.Module):
    """A timm ``features_only`` network cut at one stage: images → that stage's feature map."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)[-1]


def _output_dim(module: nn.Module, image_size: int) -> int:
    """Width of the pooled output (some timm heads add a projection beyond ``num_features``)."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        width = int(module(torch.zeros(1, 3, image_size, image_size)).shape[1])
    module.train(was_training)
    return width


def _open_clip_backbone(name: str, pretrained: str | None, image_size: int, **kwargs) -> Backbone:
    import open_clip

    try:
        model = open_clip.create_model(name, pretrained=pretrained or None, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error) or "not found" in str(error).lower() and not pretrained:
            raise BackboneError(f"open_clip has no architecture '{name}' ({error})") from error
        raise _offline_help(f"open_clip:{name}", str(pretrained), error) from error
    except Exception as error:  # noqa: BLE001
        raise _offline_help(f"open_clip:{name}", str(pretrained), error) from error
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    return Backbone(visual, int(visual.output_dim), Preprocess(image_size=int(size), mean=OPENAI_MEAN, std=OPENAI_STD),
                    f"open_clip:{name}", str(pretrained) if pretrained else None)


def create_backbone(spec: str, pretrained: str | None = None, image_size: int = 64, **kwargs) -> Backbone:
    """Build ``library:architecture`` with optional pretrained weights (tag or local path)."""
    library, _, name = spec.partition(":")
    if not name:
        raise BackboneError(f"backbone spec '{spec}' must look like 'timm:resnet18' or 'open_clip:ViT-B-32'")
    if library == "timm":
        return _timm_backbone(name, pretrained, image_size, **kwargs)
    if library == "open_clip":
        return _open_clip_backbone(name, pretrained, image_size, **kwargs)
    raise BackboneError(f"unknown backbone library '{library}' in '{spec}'; use 'timm' or 'open_clip'")
