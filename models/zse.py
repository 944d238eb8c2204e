"""ZSE-SBIR (Lin et al., CVPR 2023, "Zero-Shot Everything Sketch-Based Image Retrieval, and in Explainable
Style"), as the paper and the authors' code (buptLinfy/ZSE-SBIR: ``model/sa.py``, ``ca.py``, ``rn.py``,
``model.py``, ``train.py``) define it. The fidelity table (docs/architecture.md, "ZSE-SBIR") maps each part to
its test.

- **Learnable tokenizer**: the patch embedding (a ViT's own; in compact profiles a pretrained CNN cut at the
  grid's stride) averaged with ``ScaleEmbedding``, a CNN of stride-2 convolutions learnt from scratch;
- **self-attention** encoder shared by both domains, with one ``[cls]`` token: the **retrieval token**. Its
  L2-normalised vector is the embedding (the paper's *Ret* mode: one vector per image);
- **cross-attention**: one layer per direction (sketch attends to photo, photo to sketch), each token querying
  the other image's keys over its own image's values, post-norm, ReLU feed-forward;
- **token-level relation network**: the cross-attended patch tokens reduced by a 2×2 stride-2 convolution (14×14
  → 7×7 of 512-d in the paper), the whole anchor×anchor cosine map flattened into an MLP (2401→343→49→1 for 49
  anchors, dropout, sigmoid): the paper's *RN* mode scores a sketch–photo pair.

Training (``train.py``, ``utils/loss.py``): quadruplets (sketch, same-class photo, another same-class sketch,
other-class photo); 2 × triplet (Euclidean, margin 1) on the cross-attended ``[cls]`` of the sketch, its photo
and the other-class photo; 4 × MSE of the relation score to 0.99 (positive pair) and 0.01 (the second sketch
with the other-class photo). An instance InfoNCE on the retrieval embeddings (``instance``) is ours, off unless
its loss weight is set.

Named differences from the released code, following the paper: patch tokens are reshaped into their grid before
the 2×2 convolution (the release ``view``s the (196, 768) token matrix as (768, 14, 14), mixing tokens), and
``torch.nn.LayerNorm`` replaces the release's std-based LayerNorm (ε 1e-6 on the standard deviation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import create_backbone
from models.imaging import EdgeMap, add_statistics, standardise
from models.interface import TorchRetrievalModel
from models.losses import cross_modal_infonce
from models.method import Batch, Method, two_speed_groups, weighted_total
from models.registry import register_method
from sbir.config import ConfigError, Count, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt


@dataclass
class ZSEConfig:
    """Architecture and loss settings (``params.yaml`` ``zse.model``; the paper profile: configs/published.yaml)."""

    backbone: str  # the patch embedding: a timm ViT (paper: vit_base_patch16_224) or a CNN cut at feature_level
    pretrained: str | None
    image_size: PositiveInt
    feature_level: Count | None  # CNN patch embeddings: the stage whose map becomes the tokens (ViTs: ignored)
    photo_edges: bool  # ours: photos enter as their Sobel edge map (line art, like sketches)
    sketch_ink: bool  # ours: sketches ink-normalised
    style_augment: Fraction  # ours: share of training sketches redrawn thicker, fainter or as tiny bitmaps
    scale_embedding: bool  # the learnable multi-scale CNN branch averaged with the patch embedding (paper: on)
    width: PositiveInt  # the token width = the embedding's (a ViT's: stated, and checked against the ViT)
    depth: PositiveInt  # CNN patch embeddings: self-attention layers (ViTs: the ViT's blocks)
    heads: PositiveInt
    mlp_ratio: PositiveFloat
    cross_layers: PositiveInt  # paper: 1
    cross_heads: PositiveInt  # paper: 8
    cross_ff: PositiveInt  # paper: 1024
    relation_width: PositiveInt  # channels of the 2x2 token reduction (paper: 512)
    dropout: Fraction  # cross-attention, relation network, a ViT's embeddings and projections (paper: 0.1)
    margin: NonNegativeFloat  # triplet margin on the Euclidean distance (paper: 1)
    temperature: PositiveFloat  # the instance InfoNCE (ours)
    tokenizer_lr_factor: NonNegativeFloat  # the pretrained patch embedding (and ViT blocks) at lr x this (paper: 1)
    loss_weights: dict[str, NonNegativeFloat]  # triplet, relation (paper: 2, 4), instance (ours; paper: 0)


class ScaleEmbedding(nn.Module):
    """The paper's learnable tokenizer branch (``Scale_Embedding``): stride-2 convolutions without bias, ReLU
    between, 7×7 then 3×3 kernels, channels 64, 128, 256, … and ``width`` last: one per halving of the stride."""

    def __init__(self, stride: int, width: int) -> None:
        super().__init__()
        layers = round(math.log2(stride))
        if stride < 2 or 2 ** layers != stride:
            raise ConfigError(f"zse: the token grid's stride must be a power of two >= 2, got {stride}")
        channels = [3] + [64 * 2 ** i for i in range(layers - 1)] + [width]
        modules: list[nn.Module] = []
        for i in range(layers):
            kernel = 7 if i == 0 else 3
            modules.append(nn.Conv2d(channels[i], channels[i + 1], kernel, 2, kernel // 2, bias=False))
            if i < layers - 1:
                modules.append(nn.ReLU())
        self.seq = nn.Sequential(*modules)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.seq(images).flatten(2).transpose(1, 2)


class Tokenizer(nn.Module):
    """Standardised images → patch tokens (B, L, width), the patch embedding averaged with ``ScaleEmbedding``."""

    def __init__(self, config: ZSEConfig) -> None:
        super().__init__()
        library, _, name = config.backbone.partition(":")
        self.vit = library == "timm" and name.startswith(("vit_", "deit_"))
        if self.vit:
            built = create_backbone(config.backbone, pretrained=config.pretrained, image_size=config.image_size,
                                    img_size=config.image_size, pos_drop_rate=config.dropout,
                                    proj_drop_rate=config.dropout)
            self.net = built.module
            if self.net.num_prefix_tokens != 1 or getattr(self.net, "no_embed_class", False):
                raise ConfigError(f"zse: {config.backbone} must have one [cls] token with a position of its own")
            self.width = int(self.net.embed_dim)
            if self.width != config.width:
                raise ConfigError(f"zse: width is {config.width} but {config.backbone} is {self.width} wide; "
                                  f"set zse.model.width: {self.width}")
            self.grid = tuple(self.net.patch_embed.grid_size)
        else:
            built = create_backbone(config.backbone, pretrained=config.pretrained, image_size=config.image_size,
                                    features_only=True, out_indices=(config.feature_level,))
            self.net = built.module
            with torch.no_grad():
                fmap = self.net.eval()(torch.zeros(1, 3, config.image_size, config.image_size))
            self.net.train()
            self.width = config.width
            self.grid = tuple(fmap.shape[2:])
            self.project = nn.Conv2d(fmap.shape[1], config.width, 1)
        stride = config.image_size // self.grid[0]
        self.scale = ScaleEmbedding(stride, self.width) if config.scale_embedding else None
        self.preprocess = built.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.vit:
            patches = self.net.patch_embed(images)
        else:
            patches = self.project(self.net(images)).flatten(2).transpose(1, 2)
        if self.scale is None:
            return patches
        return (patches + self.scale(images)) / 2


class CrossAttentionLayer(nn.Module):
    """One direction of the authors' cross-attention (``model/ca.py``): the own image's tokens are the queries
    and values, the other image's tokens the keys; residual on the own tokens, post-norm, ReLU feed-forward."""

    def __init__(self, width: int, heads: int, feed_forward: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(width, feed_forward), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(feed_forward, width))
        self.norm_attention, self.norm_feed_forward = nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop_attention, self.drop_feed_forward = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(own, other, own, need_weights=False)
        tokens = self.norm_attention(own + self.drop_attention(attended))
        return self.norm_feed_forward(tokens + self.drop_feed_forward(self.feed_forward(tokens)))


class CrossAttention(nn.Module):
    """``cross_layers`` layers per direction; both directions read the previous layer's tokens."""

    def __init__(self, width: int, layers: int, heads: int, feed_forward: int, dropout: float) -> None:
        super().__init__()
        self.sketch_layers = nn.ModuleList(CrossAttentionLayer(width, heads, feed_forward, dropout)
                                           for _ in range(layers))
        self.photo_layers = nn.ModuleList(CrossAttentionLayer(width, heads, feed_forward, dropout)
                                          for _ in range(layers))

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for sketch_layer, photo_layer in zip(self.sketch_layers, self.photo_layers):
            sketch, photo = sketch_layer(sketch, photo), photo_layer(photo, sketch)
        return sketch, photo


def relation_hidden(anchors: int) -> int:
    """The first hidden width of the paper's relation MLP: anchors^1.5 (49 → 343, 144 → 1728, 196 → 2744)."""
    return round(anchors ** 1.5)


class RelationNetwork(nn.Module):
    """sigmoid(MLP(anchor × anchor cosine map)): anchors² → anchors^1.5 → anchors → 1, ReLU, dropout between."""

    def __init__(self, anchors: int, dropout: float) -> None:
        super().__init__()
        hidden = relation_hidden(anchors)
        self.mlp = nn.Sequential(nn.Linear(anchors * anchors, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, anchors), nn.ReLU(), nn.Dropout(dropout), nn.Linear(anchors, 1))

    def forward(self, cosine: torch.Tensor) -> torch.Tensor:
        """(B, anchors, anchors) cosines → (B,) scores in (0, 1)."""
        return torch.sigmoid(self.mlp(cosine.flatten(1)))[:, 0]


class ZSENet(nn.Module):
    """Tokenizer + shared self-attention with the retrieval token + cross-attention + relation network."""

    def __init__(self, config: ZSEConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config)
        width = self.tokenizer.width
        rows, cols = self.tokenizer.grid
        if rows % 2 or cols % 2:
            raise ConfigError(f"zse: the 2x2 token reduction needs an even token grid, got {rows} x {cols}")
        if self.tokenizer.vit:
            self.encoder = None
        else:
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.position = nn.Parameter(torch.randn(1, 1 + rows * cols, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, config.heads, int(width * config.mlp_ratio), dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, config.depth, norm=nn.LayerNorm(width),
                                                 enable_nested_tensor=False)
        self.cross = CrossAttention(width, config.cross_layers, config.cross_heads, config.cross_ff, config.dropout)
        self.reduce = nn.Conv2d(width, config.relation_width, 2, 2)
        self.relation = RelationNetwork(self.anchors, config.dropout)
        self.edges = EdgeMap()
        add_statistics(self, self.tokenizer.preprocess.mean, self.tokenizer.preprocess.std)

    @property
    def grid(self) -> tuple[int, int]:
        """The self-attention's patch grid."""
        return self.tokenizer.grid

    @property
    def relation_grid(self) -> tuple[int, int]:
        """The relation network's anchor grid (the patch grid halved)."""
        return self.grid[0] // 2, self.grid[1] // 2

    @property
    def anchors(self) -> int:
        return self.relation_grid[0] * self.relation_grid[1]

    @property
    def width(self) -> int:
        return self.tokenizer.width

    def encode_tokens(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Images in [0, 1] → self-attention tokens (B, 1 + L, width): the retrieval token, then the patches."""
        if domain == "photo" and self.config.photo_edges:
            images = self.edges(images)
        patches = self.tokenizer(standardise(images, self))
        batch = patches.shape[0]
        if self.encoder is None:  # a ViT: its [cls] and positions, then its blocks
            vit = self.tokenizer.net
            tokens = torch.cat([vit.cls_token.expand(batch, -1, -1), patches], 1) + vit.pos_embed
            return vit.norm(vit.blocks(vit.pos_drop(tokens)))
        return self.encoder(torch.cat([self.cls.expand(batch, -1, -1), patches], 1) + self.position)

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Ret mode: images in [0, 1] → the unit retrieval token."""
        return F.normalize(self.encode_tokens(images, domain)[:, 0], dim=1)

    def reduced(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, L, width) → their grid → 2×2 stride-2 convolution → (B, anchors, relation_width)."""
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)
        return self.reduce(grid).flatten(2).transpose(1, 2)

    def relate(self, sketch_tokens: torch.Tensor, photo_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Self-attention tokens of B pairs → cross-attention → relation network: the pair score (B,), the
        cross-attended retrieval tokens and the anchor cosine map (B, anchors, anchors)."""
        sketch, photo = self.cross(sketch_tokens, photo_tokens)
        cosine = self.cosine(self.reduced(sketch[:, 1:]), self.reduced(photo[:, 1:]))
        return {"score": self.relation(cosine), "sketch_cls": sketch[:, 0], "photo_cls": photo[:, 0],
                "cosine": cosine}

    @staticmethod
    def cosine(sketch: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        """Anchor-to-anchor cosines (B, As, Ap); a zero vector's cosines are 0 (the release maps NaN to 0)."""
        return F.normalize(sketch, dim=-1) @ F.normalize(photo, dim=-1).transpose(1, 2)

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor, negative_sketch: torch.Tensor,
                negative_photo: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass over B (sketch, photo) pairs and B negative pairs (``quadruplets``): the retrieval
        embeddings, the cross-attended [cls] of anchor, positive and negative, and the 2B relation scores."""
        sketch_tokens, photo_tokens = self.encode_tokens(sketches, "sketch"), self.encode_tokens(photos, "photo")
        relation = self.relate(torch.cat([sketch_tokens, sketch_tokens[negative_sketch]]),
                               torch.cat([photo_tokens, photo_tokens[negative_photo]]))
        batch = len(sketches)
        return {"sketch": F.normalize(sketch_tokens[:, 0], dim=1), "photo": F.normalize(photo_tokens[:, 0], dim=1),
                "anchor": relation["sketch_cls"][:batch], "positive": relation["photo_cls"][:batch],
                "negative": relation["photo_cls"][batch:], "relation": relation["score"]}


def quadruplets(sketch_labels: torch.Tensor, photo_labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For pair i (sketch i, its photo i): the negative pair's sketch (the next other sketch of the same category
    in the batch, else sketch i) and photo (the next photo of another category), and whether such a photo exists.
    The release draws these from the dataset; here they come from the batch (``sketches_per_category`` ≥ 2
    gives a second sketch of each category)."""
    size = len(sketch_labels)
    order = (torch.arange(size)[:, None] + torch.arange(1, size + 1)[None, :]).to(sketch_labels.device) % size
    other = photo_labels[order] != sketch_labels[:, None]
    valid = other.any(dim=1)
    negative_photo = torch.where(valid, order.gather(1, other.float().argmax(1, keepdim=True))[:, 0],
                                 order[:, -1])
    same = sketch_labels[order] == sketch_labels[:, None]  # the last column is sketch i itself
    negative_sketch = order.gather(1, same.float().argmax(1, keepdim=True))[:, 0]
    return negative_sketch, negative_photo, valid


def zse_losses(net: ZSENet, out: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and their weighted sum under ``total``: the paper's triplet and relation
    terms, and our instance InfoNCE."""
    config = net.config
    _, _, valid = quadruplets(batch.sketch_labels, batch.photo_labels)
    size = len(valid)
    anchor, positive, negative = out["anchor"].float(), out["positive"].float(), out["negative"].float()
    triplet = (F.triplet_margin_loss(anchor[valid], positive[valid], negative[valid], margin=config.margin, p=2)
               if valid.any() else anchor.sum() * 0.0)
    target = torch.cat([torch.ones(size), torch.zeros(size)]).clamp(0.01, 0.99).to(anchor.device)
    scored = torch.cat([torch.ones_like(valid), valid])
    terms = {
        "triplet": triplet,
        "relation": F.mse_loss(out["relation"].float()[scored], target[scored]),
        "instance": cross_modal_infonce(out["sketch"].float(), out["photo"].float(), batch.same_instance,
                                        config.temperature),
    }
    return weighted_total(terms, config.loss_weights)


@register_method("zse")
class ZSE(Method):
    """ZSE-SBIR behind the method contract: the base builds ``ZSENet`` from the config, feeds it [0, 1] pixels,
    augments and exports one encoder per domain (the retrieval token: the paper's Ret mode)."""

    config_class = ZSEConfig
    network = ZSENet

    @property
    def embedding_dim(self) -> int:
        """The retrieval token's width (a ViT's own: the tokenizer checks that ``width`` states it)."""
        return self.config.width

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        negative_sketch, negative_photo, _ = quadruplets(batch.sketch_labels, batch.photo_labels)
        return model(batch.sketches, batch.photos, negative_sketch, negative_photo)

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return zse_losses(net, outputs, batch)

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The pretrained patch embedding (a ViT: with its blocks) at ``lr · tokenizer_lr_factor``, the rest at
        ``lr`` (the scale embedding is new: full rate)."""
        return two_speed_groups(net, net.tokenizer.net, lr, self.config.tokenizer_lr_factor)

    def exported_class(self) -> type[TorchRetrievalModel]:
        """Encoders plus the relation network's capabilities: RN scoring, explanations, synthesis."""
        from models.zse_explain import ExplainableZSE

        return ExplainableZSE
