"""CLIP towers for prompt learning: open_clip architectures as data, the small CLIP the pipeline trains itself
(stage ``pretrain_clip``) and its folder, and published CLIPs by their open_clip name.

An *architecture* is open_clip's model config as a dict (``embed_dim``, ``vision_cfg``, ``text_cfg``, optionally
``quick_gelu``), exactly what ``open_clip.model.CLIP`` takes, plus one key of ours, ``patch_tokens``:

- ``None``: the ViT's own pixel patches (``visual.conv1``, a strided convolution), trained from scratch;
- ``{"backbone": "timm:efficientnet_lite0", "pretrained": "package:efficientnet_lite0", "feature_level": 2}``:
  a pretrained CNN cut at a stage (``BackbonePatchTokens``), whose feature map, projected by a 1×1
  convolution, replaces ``visual.conv1``. Its stride must equal ``vision_cfg.patch_size`` so the token grid
  (and the positional embedding) is the ViT's. Its BatchNorms are frozen (statistics and affine); its
  convolutions train at a fraction of the learning rate, or not at all (``models.clip.pretrain``).

A CLIP folder holds ``model.safetensors`` (every weight, the text tower's included) and ``config.json``
(``kind: clip``: the architecture, the tokenizer's context length, the caption templates, the categories and
the data fingerprint it was trained on). The tokenizer is open_clip's default BPE (it ships with the package).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import (OPENAI_MEAN, OPENAI_STD, BackboneError, _offline_help, create_backbone, is_local_weights,
                              uses_quick_gelu)
from sbir.io import atomic_write_bytes, atomic_write_json

CLIP_SCHEMA = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPEN_CLIP_PREFIX = "open_clip:"


def category_phrase(category: str) -> str:
    """A category name as words (``face-smiling`` → ``face smiling``, ``hot_air_balloon`` → ``hot air balloon``)."""
    return " ".join(category.replace("-", " ").replace("_", " ").split())


class BackbonePatchTokens(nn.Module):
    """Replaces ``visual.conv1``: CLIP-standardised images → a CNN's feature map at one stage → 1×1 projection
    to the ViT width, ``(B, width, H / stride, W / stride)``. The input is re-standardised to the CNN's own
    statistics by a fixed affine map, so the tower keeps CLIP's preprocessing."""

    def __init__(self, spec: dict[str, Any], width: int, image_size: int, patch_size: int,
                 load_pretrained: bool = True) -> None:
        super().__init__()
        from timm.layers import freeze_batch_norm_2d

        unknown = set(spec) - {"backbone", "pretrained", "feature_level"}
        if unknown or "backbone" not in spec:
            raise BackboneError(f"patch_tokens needs 'backbone' (and optionally 'pretrained', 'feature_level'); "
                                f"unknown keys {sorted(unknown)}")
        level = int(spec.get("feature_level", 2))
        backbone = create_backbone(spec["backbone"], pretrained=spec.get("pretrained") if load_pretrained else None,
                                   image_size=image_size, features_only=True, out_indices=(level,))
        self.features = freeze_batch_norm_2d(backbone.module)
        with torch.no_grad():
            channels, rows, _ = self.features.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1:]
        if rows * patch_size != image_size:
            raise BackboneError(f"patch_tokens {spec['backbone']} at stage {level} has stride {image_size // rows}; "
                                f"vision_cfg.patch_size must be the same (is {patch_size})")
        self.proj = nn.Conv2d(channels, width, kernel_size=1)
        clip_mean, clip_std = torch.tensor(OPENAI_MEAN), torch.tensor(OPENAI_STD)
        own_mean, own_std = torch.tensor(backbone.preprocess.mean), torch.tensor(backbone.preprocess.std)
        self.register_buffer("scale", (clip_std / own_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((clip_mean - own_mean) / own_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images * self.scale + self.shift))


def _vision_cfg(architecture: dict[str, Any]) -> dict[str, Any]:
    cfg = architecture.get("vision_cfg")
    if not isinstance(cfg, dict) or "embed_dim" not in architecture:
        raise BackboneError("a CLIP architecture needs 'embed_dim' and a 'vision_cfg' mapping (open_clip's config)")
    return cfg


def image_size_of(architecture: dict[str, Any]) -> int:
    size = _vision_cfg(architecture).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _attach_patch_tokens(visual: nn.Module, architecture: dict[str, Any], load_pretrained: bool) -> nn.Module:
    spec = architecture.get("patch_tokens")
    if spec:
        cfg = _vision_cfg(architecture)
        visual.conv1 = BackbonePatchTokens(spec, int(cfg.get("width", 768)), image_size_of(architecture),
                                           int(cfg.get("patch_size", 16)), load_pretrained)
    return visual


def _open_clip_parts(architecture: dict[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in architecture.items() if key != "patch_tokens"}


def build_clip(architecture: dict[str, Any], load_pretrained: bool = True) -> nn.Module:
    """open_clip ``CLIP`` (image and text towers) from an architecture; ``load_pretrained`` loads the
    patch-token backbone's pretrained weights (a CLIP folder's weights replace them otherwise)."""
    from open_clip.model import CLIP

    _vision_cfg(architecture)
    try:
        model = CLIP(**_open_clip_parts(architecture))
    except TypeError as error:
        raise BackboneError(f"not an open_clip CLIP architecture ({error})") from error
    _attach_patch_tokens(model.visual, architecture, load_pretrained)
    return model


def build_visual(architecture: dict[str, Any]) -> nn.Module:
    """The image tower alone, randomly initialised (its weights come from a checkpoint)."""
    from open_clip.model import _build_vision_tower

    parts = _open_clip_parts(architecture)
    visual = _build_vision_tower(parts["embed_dim"], _vision_cfg(parts), quick_gelu=bool(parts.get("quick_gelu")))
    return _attach_patch_tokens(visual, architecture, load_pretrained=False)


def tokenizer_for(context_length: int):
    """open_clip's default BPE tokenizer (shipped with the package) at a context length."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     caption_ids: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of (image, caption) pairs. Pairs whose captions are identical
    (``caption_ids``) are positives of each other (category-only captions repeat); with unique captions this
    is exactly open_clip's ``ClipLoss``."""
    logits = logit_scale * image_features @ text_features.T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def is_clip_folder(spec: str) -> bool:
    return (Path(spec) / CONFIG_FILE).is_file()


def read_clip_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a CLIP folder, its kind and schema checked."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise BackboneError(f"{folder}: not a CLIP folder (no {CONFIG_FILE}); run the pretrain_clip stage "
                            "(dvc repro pretrain_clip) or name an open_clip model (open_clip:ViT-B-32)")
    document = json.loads(path.read_text())
    if document.get("kind") != "clip" or document.get("schema_version") != CLIP_SCHEMA:
        raise BackboneError(f"{path}: not a CLIP folder of schema {CLIP_SCHEMA} (kind {document.get('kind')!r}, "
                            f"schema {document.get('schema_version')!r})")
    return document


def save_clip_folder(folder: str | Path, model: nn.Module, architecture: dict[str, Any],
                     facts: dict[str, Any]) -> Path:
    """Weights first, ``config.json`` last (its presence marks a complete folder)."""
    from safetensors.torch import save

    folder = Path(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))
    context = int(architecture.get("text_cfg", {}).get("context_length", 77))
    atomic_write_json(folder / CONFIG_FILE, {"schema_version": CLIP_SCHEMA, "kind": "clip",
                                            "architecture": architecture, "context_length": context,
                                            "tokenizer": "open_clip SimpleTokenizer (default BPE)", **facts})
    return folder


def load_clip_folder(folder: str | Path) -> tuple[nn.Module, dict[str, Any], Any]:
    """(CLIP, architecture, tokenizer) of a CLIP folder."""
    from safetensors.torch import load_file

    document = read_clip_config(folder)
    model = build_clip(document["architecture"], load_pretrained=False)
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    return model.eval(), document["architecture"], tokenizer_for(int(document["context_length"]))


def named_architecture(name: str, pretrained: str | None, quick_gelu: bool | None = None) -> dict[str, Any]:
    """open_clip's config for a model name, with the activation its weights were trained with."""
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        raise BackboneError(f"open_clip has no architecture '{name}'; e.g. ViT-B-32, ViT-B-16, ViT-B-32-quickgelu")
    config["quick_gelu"] = uses_quick_gelu(name, pretrained, quick_gelu)
    return {**config, "patch_tokens": None}


def load_named_clip(name: str, pretrained: str | None,
                    quick_gelu: bool | None = None) -> tuple[nn.Module, dict[str, Any], Any]:
    """(CLIP, architecture, tokenizer) of ``open_clip:<name>`` with a tag or a local weights file; offline, a
    tag that needs a download fails with the message of ``models.backbones``; a local file that does not fit
    (missing keys, other shapes) fails naming it."""
    import open_clip

    architecture = named_architecture(name, pretrained, quick_gelu)
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None,
                                       force_quick_gelu=bool(architecture["quick_gelu"]))
    except Exception as error:  # noqa: BLE001 - hub/network and state-dict failures come in many types
        if is_local_weights(pretrained):
            raise BackboneError(f"{pretrained}: does not fit open_clip:{name}: {type(error).__name__}: "
                                f"{str(error)[:600]}") from error
        raise _offline_help(f"{OPEN_CLIP_PREFIX}{name}", str(pretrained), error) from error
    return model.eval(), architecture, open_clip.get_tokenizer(name)


def load_clip(spec: str, pretrained: str | None,
              quick_gelu: bool | None = None) -> tuple[nn.Module, dict[str, Any], Any]:
    """A CLIP folder (the pipeline's own) or ``open_clip:<name>``: (model, architecture, tokenizer)."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_named_clip(spec[len(OPEN_CLIP_PREFIX):], pretrained, quick_gelu)
    if pretrained or quick_gelu is not None:
        raise BackboneError(f"'{spec}' is a CLIP folder: it holds its weights and architecture, so pretrained "
                            "and quick_gelu must be null")
    return load_clip_folder(spec)


def architecture_of(spec: str, pretrained: str | None, quick_gelu: bool | None = None) -> dict[str, Any]:
    """The architecture of a CLIP spec without loading weights."""
    if spec.startswith(OPEN_CLIP_PREFIX):
        return named_architecture(spec[len(OPEN_CLIP_PREFIX):], pretrained, quick_gelu)
    return read_clip_config(spec)["architecture"]


@torch.no_grad()
def text_features(model: nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Unit text embeddings of ``texts`` by a CLIP's (frozen) text tower."""
    model.eval()
    return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)
