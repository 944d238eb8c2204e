"""DSN-style method (Wang et al., IJCAI'21, "Domain-Smoothing Network for Zero-Shot Sketch-Based Image
Retrieval"): one backbone shared by both domains with modality-specific embedding heads, trained with

- cross-entropy over the seen categories (a classifier shared by both domains),
- cross-modal supervised contrastive learning over augmented sketch and photo views (on a projection),
- a category-specific sketch memory bank that pulls photos to their category's sketch prototype,
- and, for the sketches that link to the photo they were drawn from, an instance-level cross-modal InfoNCE
  (our addition, for fine-grained retrieval; category-level pairs never enter it).

Three architecture options, chosen by ablation on OpenMoji-ZS (benchmarks/results/train_ablation.md):
``feature_level`` cuts a timm backbone after one stage (faster, and a finer map), ``pool: flatten`` keeps the
spatial layout of that map, and ``photo_edges`` feeds photos as their Sobel edge map (a fixed layer inside the
network, so serving needs no extra preprocessing): sketches carry no colour.

Not reproduced: SAKE's knowledge distillation from an ImageNet teacher with a WordNet class mask, which needs
pretrained teacher weights (unavailable offline); with a local pretrained backbone it could be added as a term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import create_backbone
from models.imaging import EdgeMap, add_statistics, standardise
from models.interface import TorchRetrievalModel
from models.losses import SketchMemoryBank, cross_modal_infonce, supervised_contrastive
from models.method import Batch, Method, two_speed_groups, weighted_total
from models.registry import register_method
from sbir.config import Count, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt


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
    memory_size: PositiveInt
    temperature: PositiveFloat
    backbone_lr_factor: NonNegativeFloat  # the backbone's learning rate relative to the heads' (e.g. 0.1 when pretrained)
    loss_weights: dict[str, NonNegativeFloat]  # per loss term; an unknown term is an error


class DSNNet(nn.Module):
    """Backbone + per-domain heads → unit embeddings; projection, classifier and memory for training."""

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
        if config.pool == "flatten":
            self.backbone = nn.Sequential(backbone.module, nn.Flatten())
        elif config.feature_level is not None:
            self.backbone = nn.Sequential(backbone.module, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.backbone = backbone.module
        features = backbone.feature_dim
        if config.pool == "flatten":  # the flattened map's width depends on the input size
            with torch.no_grad():
                features = int(self.backbone.eval()(torch.zeros(1, 3, config.image_size, config.image_size)).shape[1])
            self.backbone.train()
        sketch_head = nn.Linear(features, config.embedding_dim)
        photo_head = sketch_head if config.shared_heads else nn.Linear(features, config.embedding_dim)
        self.heads = nn.ModuleDict({"sketch": sketch_head, "photo": photo_head})
        self.projection = nn.Sequential(nn.Linear(config.embedding_dim, config.embedding_dim), nn.ReLU(inplace=True),
                                        nn.Linear(config.embedding_dim, config.projection_dim))
        # a cosine classifier: logits of unit embeddings need a scale (1/temperature) to become confident
        self.classifier = nn.Linear(config.embedding_dim, num_classes, bias=False)
        self.memory = SketchMemoryBank(num_classes, config.memory_size, config.embedding_dim)
        self.edges = EdgeMap()
        add_statistics(self, backbone.preprocess.mean, backbone.preprocess.std)

    def edge_map(self, images: torch.Tensor) -> torch.Tensor:
        """Dark lines on white where the grey level changes (Sobel magnitude), as 3 channels in [0, 1]."""
        return self.edges(images)

    def _input(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        if domain == "photo" and self.config.photo_edges:
            images = self.edge_map(images)
        return standardise(images, self)

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Images in [0, 1], (B, 3, S, S) → unit embeddings (B, embedding_dim)."""
        features = self.backbone(self._input(images, domain))
        return F.normalize(self.heads[domain](features), dim=1)

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass over both domains (a single backbone call keeps BatchNorm statistics shared)."""
        features = self.backbone(torch.cat([self._input(sketches, "sketch"), self._input(photos, "photo")]))
        n = sketches.shape[0]
        sketch_emb = F.normalize(self.heads["sketch"](features[:n]), dim=1)
        photo_emb = F.normalize(self.heads["photo"](features[n:]), dim=1)
        embeddings = torch.cat([sketch_emb, photo_emb])
        logits = embeddings @ F.normalize(self.classifier.weight, dim=1).T / self.config.temperature
        return {"sketch": sketch_emb, "photo": photo_emb, "logits": logits,
                "projected": F.normalize(self.projection(embeddings), dim=1)}


def dsn_losses(net: DSNNet, out: dict[str, torch.Tensor], sketch_labels: torch.Tensor, photo_labels: torch.Tensor,
               same_instance: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and their weighted sum under ``total``."""
    config = net.config
    labels = torch.cat([sketch_labels, photo_labels])
    terms = {
        "classification": F.cross_entropy(out["logits"].float(), labels),
        "contrastive": supervised_contrastive(out["projected"].float(), labels, config.temperature),
        "memory": net.memory.loss(out["photo"].float(), photo_labels, config.temperature),
        "instance": cross_modal_infonce(out["sketch"].float(), out["photo"].float(), same_instance,
                                        config.temperature),
    }
    return weighted_total(terms, config.loss_weights)


@register_method("dsn")
class DSN(Method):
    """The DSN-style method behind the method contract: the base builds ``DSNNet`` from the config, feeds it
    [0, 1] pixels (it standardises, and edge-maps photos, itself), augments with style jitter and exports one
    encoder per domain."""

    config_class = DSNConfig
    network = DSNNet

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return dsn_losses(net, outputs, batch.sketch_labels, batch.photo_labels, batch.same_instance)

    def after_step(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch,
                   gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        net.memory.update(gather(outputs["sketch"].detach().float()), gather(batch.sketch_labels))

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
