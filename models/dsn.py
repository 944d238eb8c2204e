"""DSN (Wang et al., IJCAI'21, "Domain-Smoothing Network for Zero-Shot Sketch-Based Image Retrieval"), as the paper
and the authors' code (haowang1992/DSN: ``train_cse_resnet_*.py``, ``tool.py``) define it; the fidelity table
(docs/architecture.md, "DSN") maps each part to its test. One backbone shared by both domains, an embedding
(the paper's hashing layer), and four terms:

- cross-entropy over the seen categories, a linear classifier on the embedding;
- SAKE's knowledge preservation (Liu et al., ICCV'19): the embedding's ImageNet logits (a linear head) against a
  frozen ImageNet teacher, the pretrained network itself, on the photos;
- cross-modal supervised contrastive learning over ``contrastive_views`` SimCLR-style views of every sketch and
  photo (``models.data.contrastive_view``), on a projection of their embeddings;
- the category-specific sketch memory on backbone features: per category the sketches nearest the batch's photo
  mean, photos pulled to that centre by 1 − cosine (``models.losses.SketchMemoryBank``).

Ours, named: an instance InfoNCE where sketches link to the photo they were drawn from (``instance``, weight 0 in
the paper profile), modality-specific embedding heads (``shared_heads: false``, in the compact profile, whose
EfficientNet-Lite has no SE blocks to condition on the modality as CSE-ResNet does: ``modality_conditioning``,
``models.conditioning``), and the options chosen by ablation on OpenMoji-ZS
(benchmarks/results/train_ablation.md): ``feature_level`` cuts a timm backbone after one stage, ``pool: flatten``
keeps the spatial layout of that map, and ``photo_edges`` feeds photos as their Sobel edge map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import create_backbone
from models.conditioning import condition_on_modality
from models.imaging import EdgeMap, add_statistics, standardise
from models.interface import TorchRetrievalModel
from models.data import contrastive_view
from models.losses import SketchMemoryBank, cross_modal_infonce, knowledge_preservation, supervised_contrastive
from models.method import Batch, Method, two_speed_groups, weighted_total
from models.registry import register_method
from sbir.config import ConfigError, Count, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt


@dataclass
class DSNConfig:
    """Architecture and loss settings (``params.yaml`` ``dsn.model``: the values live there)."""

    backbone: str  # timm:<name> or open_clip:<name>
    pretrained: str | None  # a package's weights, a timm/open_clip tag, a local file
    image_size: PositiveInt
    feature_level: Count | None  # timm backbones: cut after this stage (timm out_indices); None: whole net
    pool: Literal["avg", "flatten"]  # flatten: keep the spatial layout of the last feature map
    photo_edges: bool  # photos enter as their edge map (fixed Sobel layer): line art like sketches
    sketch_ink: bool  # sketches enter ink-normalised (sbir.ink): contrast, centring, one stroke width
    style_augment: Fraction  # training: share of sketches redrawn thicker, fainter or as tiny bitmaps
    embedding_dim: PositiveInt
    projection_dim: PositiveInt
    shared_heads: bool
    modality_conditioning: bool  # CSE: SE blocks gated by the modality (paper: on; needs a backbone with SE blocks)
    memory_size: PositiveInt  # sketches kept per category (paper: 10)
    memory_gradient: bool  # the memory term's gradient reaches the photos (paper; the release detaches them)
    contrastive_views: Count  # SimCLR-style views per image for the contrastive term (paper: 2; 0: the base views)
    temperature: PositiveFloat
    backbone_lr_factor: NonNegativeFloat  # the backbone's learning rate relative to the heads' (e.g. 0.1 when pretrained)
    loss_weights: dict[str, NonNegativeFloat]  # per loss term; an unknown term is an error


IMAGENET_CLASSES = 1000


class DSNNet(nn.Module):
    """Backbone + embedding heads → unit embeddings; classifier, ImageNet head, projection and memory for
    training; the frozen teacher (the pretrained network with its classifier) when weights are loaded."""

    def __init__(self, config: DSNConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        if config.pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be 'avg' or 'flatten', got {config.pool!r}")
        if config.pool == "flatten" and not config.backbone.startswith("timm:"):
            raise ValueError(f"pool 'flatten' needs a timm backbone (a feature map); '{config.backbone}' pools itself")
        if config.feature_level is not None and not config.backbone.startswith("timm:"):
            raise ValueError(f"feature_level needs a timm backbone; '{config.backbone}' has no feature stages")
        if config.feature_level is not None:
            extra: dict[str, Any] = {"features_only": True, "out_indices": (config.feature_level,)}
        else:
            extra = {"global_pool": ""} if config.pool == "flatten" else {}
        backbone = create_backbone(config.backbone, pretrained=config.pretrained, image_size=config.image_size, **extra)
        self.modality = condition_on_modality(backbone.module) if config.modality_conditioning else None
        if config.pool == "flatten":
            self.backbone = nn.Sequential(backbone.module, nn.Flatten())
        elif config.feature_level is not None:
            self.backbone = nn.Sequential(backbone.module, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.backbone = backbone.module
        features = backbone.feature_dim
        if config.pool == "flatten":  # the flattened map's width depends on the input size
            self.condition(1, 0)
            with torch.no_grad():
                features = int(self.backbone.eval()(torch.zeros(1, 3, config.image_size, config.image_size)).shape[1])
            self.backbone.train()
        sketch_head = nn.Linear(features, config.embedding_dim)
        photo_head = sketch_head if config.shared_heads else nn.Linear(features, config.embedding_dim)
        self.heads = nn.ModuleDict({"sketch": sketch_head, "photo": photo_head})
        self.projection = nn.Sequential(nn.Linear(config.embedding_dim, config.embedding_dim), nn.ReLU(inplace=True),
                                        nn.Linear(config.embedding_dim, config.projection_dim))
        self.classifier = nn.Linear(config.embedding_dim, num_classes)
        self.imagenet_head = nn.Linear(config.embedding_dim, IMAGENET_CLASSES)
        self.memory = SketchMemoryBank(num_classes, config.memory_size, features)
        self.edges = EdgeMap()
        add_statistics(self, backbone.preprocess.mean, backbone.preprocess.std)
        teacher = None
        if config.pretrained and config.loss_weights.get("knowledge", 0.0) > 0:
            teacher = create_backbone(config.backbone, pretrained=config.pretrained, image_size=config.image_size,
                                      num_classes=IMAGENET_CLASSES).module.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # frozen, outside the state dict and the optimiser

    def edge_map(self, images: torch.Tensor) -> torch.Tensor:
        """Dark lines on white where the grey level changes (Sobel magnitude), as 3 channels in [0, 1]."""
        return self.edges(images)

    def _input(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        if domain == "photo" and self.config.photo_edges:
            images = self.edge_map(images)
        return standardise(images, self)

    def condition(self, sketches: int, photos: int) -> None:
        """Tag the next backbone call's images (``sketches`` then ``photos``) for the modality-conditioned SE."""
        if self.modality is not None:
            self.modality.set(torch.cat([torch.zeros(sketches), torch.ones(photos)]))

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Images in [0, 1], (B, 3, S, S) → unit embeddings (B, embedding_dim)."""
        self.condition(*((len(images), 0) if domain == "sketch" else (0, len(images))))
        features = self.backbone(self._input(images, domain))
        return F.normalize(self.heads[domain](features), dim=1)

    def teacher_logits(self, photos: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's ImageNet logits of photos in [0, 1] (as they are: no edge map)."""
        if self.teacher is None:
            raise ConfigError("dsn: the knowledge term needs the pretrained teacher: set dsn.model.pretrained")
        self.teacher.to(photos.device).eval()
        with torch.no_grad():
            return self.teacher(standardise(photos, self)).float()

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor,
                count: int | None = None) -> dict[str, torch.Tensor]:
        """``count`` sketch–photo pairs, then (``contrastive_views``) their views, in one backbone pass (BatchNorm
        statistics shared by both domains)."""
        n = count or sketches.shape[0]
        self.condition(len(sketches), len(photos))
        features = self.backbone(torch.cat([self._input(sketches, "sketch"), self._input(photos, "photo")]))
        sketch_features, photo_features = features[:len(sketches)], features[len(sketches):]
        sketch_codes, photo_codes = self.heads["sketch"](sketch_features), self.heads["photo"](photo_features)
        codes = torch.cat([sketch_codes[:n], photo_codes[:n]])
        views = torch.cat([sketch_codes[n:], photo_codes[n:]]) if len(sketches) > n else codes
        return {"sketch": F.normalize(sketch_codes[:n], dim=1), "photo": F.normalize(photo_codes[:n], dim=1),
                "logits": self.classifier(codes), "imagenet": self.imagenet_head(photo_codes[:n]),
                "projected": F.normalize(self.projection(views), dim=1),
                "sketch_features": sketch_features[:n], "photo_features": photo_features[:n]}


def dsn_losses(net: DSNNet, out: dict[str, torch.Tensor], sketch_labels: torch.Tensor, photo_labels: torch.Tensor,
               same_instance: torch.Tensor, teacher: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and their weighted sum under ``total``. ``teacher``: the teacher's logits of
    the photos (needed when the knowledge term is weighted)."""
    config = net.config
    labels = torch.cat([sketch_labels, photo_labels])
    views = len(out["projected"]) // len(labels)
    photo_features = out["photo_features"] if config.memory_gradient else out["photo_features"].detach()
    terms = {
        "classification": F.cross_entropy(out["logits"].float(), labels),
        "knowledge": (knowledge_preservation(out["imagenet"], teacher) if teacher is not None
                      else out["imagenet"].sum() * 0.0),
        "contrastive": supervised_contrastive(out["projected"].float(), _view_labels(labels, views),
                                              config.temperature),
        "memory": net.memory.loss(photo_features.float(), photo_labels),
        "instance": cross_modal_infonce(out["sketch"].float(), out["photo"].float(), same_instance,
                                        config.temperature),
    }
    if teacher is None and config.loss_weights.get("knowledge", 0.0) > 0:
        raise ConfigError("dsn: the knowledge term is weighted but no teacher logits were given")
    return weighted_total(terms, config.loss_weights)


def _view_labels(labels: torch.Tensor, views: int) -> torch.Tensor:
    """Labels of the projected views: sketches' views then photos' views, each view of the whole batch in turn."""
    n = len(labels) // 2
    sketch, photo = labels[:n], labels[n:]
    return torch.cat([sketch.repeat(views), photo.repeat(views)])


@register_method("dsn")
class DSN(Method):
    """DSN behind the method contract: the base builds ``DSNNet`` from the config and feeds it [0, 1] pixels (it
    standardises, and edge-maps photos, itself); DSN adds the contrastive views, the teacher's logits and the
    memory update, and exports one encoder per domain."""

    config_class = DSNConfig
    network = DSNNet

    def augment(self, sketches: torch.Tensor, photos: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's augmented pairs, then ``contrastive_views`` SimCLR-style views of every sketch and photo."""
        base_sketches, base_photos = super().augment(sketches, photos, generator)
        views = self.config.contrastive_views
        sketch_views = [contrastive_view(sketches, generator) for _ in range(views)]
        photo_views = [contrastive_view(photos, generator) for _ in range(views)]
        return torch.cat([base_sketches, *sketch_views]), torch.cat([base_photos, *photo_views])

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        count = len(batch.sketch_labels)
        outputs = model(batch.sketches, batch.photos, count)
        if self.config.loss_weights.get("knowledge", 0.0) > 0:
            net = model.module if hasattr(model, "module") else model
            outputs["teacher"] = net.teacher_logits(batch.photos[:count])
        return outputs

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return dsn_losses(net, outputs, batch.sketch_labels, batch.photo_labels, batch.same_instance,
                          outputs.get("teacher"))

    def after_step(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch,
                   gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        net.memory.update(gather(outputs["sketch_features"].detach().float()), gather(batch.sketch_labels),
                          gather(outputs["photo_features"].detach().float()), gather(batch.photo_labels))

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """One group at ``lr``, or the backbone at ``lr · backbone_lr_factor`` and the rest at ``lr``."""
        if self.config.backbone_lr_factor == 1.0:
            return super().param_groups(net, lr)
        return two_speed_groups(net, net.backbone, lr, self.config.backbone_lr_factor)

    def exported_class(self) -> type[TorchRetrievalModel] | None:
        """With a spatial feature map (a cut backbone, or ``pool: flatten``) the model can explain its matches."""
        if self.config.feature_level is None and self.config.pool != "flatten":
            return None
        from models.dsn_explain import ExplainableDSN

        return ExplainableDSN
