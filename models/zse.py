"""ZSE-SBIR (Lin et al., CVPR 2023, "Zero-Shot Everything Sketch-Based Image Retrieval, and in Explainable
Style"): a transformer over visual tokens with

- a **learnable tokenizer**: the pretrained backbone's feature map (EfficientNet-Lite cut at a stage, trained
  at a lower learning rate) projected to tokens, or a timm ViT's own patch embedding (the published config);
- a **self-attention** encoder shared by both domains (a domain embedding tells them apart), with a
  **retrieval token** ``[ret]`` (its projection is the embedding: the fast path, one vector per image) and a
  ``[cls]`` token classifying the seen categories;
- a **cross-attention** module: a sketch's tokens attend to a photo's and the photo's to the sketch's;
- a **token-level relation network**: every token's best local matches in the other image (its top-k token
  cosines after cross-attention) go through a small kernel MLP into a per-token score; their mean is the pair's
  relation score. Trained to regress 1 for same-category pairs and 0 otherwise (the paper's MSE).

Losses: batch-hard triplet on the retrieval embeddings (category-level), an instance InfoNCE where a sketch was
drawn from its photo (fine-grained; our addition, as in DSN), classification of ``[cls]`` and the relation loss.
Retrieval ranks by ``[ret]``; the relation network re-scores a top-k (``PairScorer``), explains a match by its
token correspondences (``MatchExplainer``) and assembles a photo-like picture for a sketch from the gallery
patches its tokens match (``PatchSynthesizer``): ``models.zse_explain``.
"""

from __future__ import annotations

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
from sbir.config import Count, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt


@dataclass
class ZSEConfig:
    """Architecture and loss settings (``params.yaml`` ``zse.model``)."""

    backbone: str  # the tokenizer: a CNN cut at feature_level, or a timm ViT
    pretrained: str | None
    image_size: PositiveInt
    feature_level: Count | None  # CNN tokenizers: the stage whose map becomes the tokens (ViTs: ignored)
    photo_edges: bool  # photos enter as their Sobel edge map (line art, like sketches)
    sketch_ink: bool
    style_augment: Fraction  # training: share of sketches redrawn thicker, fainter or as tiny bitmaps
    width: PositiveInt  # token width of the self-attention encoder (ViT tokenizers: the ViT's own)
    depth: PositiveInt  # self-attention layers over the CNN tokens (ViT tokenizers: the ViT's blocks)
    heads: PositiveInt
    mlp_ratio: PositiveFloat
    embedding_dim: PositiveInt
    relation_top_k: PositiveInt  # local matches per token fed to the relation kernel
    relation_hidden: PositiveInt
    margin: NonNegativeFloat  # triplet margin (cosine distance)
    temperature: PositiveFloat
    tokenizer_lr_factor: NonNegativeFloat  # the pretrained tokenizer's learning rate relative to the rest
    loss_weights: dict[str, NonNegativeFloat]  # per loss term; an unknown term is an error


class Tokenizer(nn.Module):
    """Images (standardised) → patch tokens (B, L, width) and the grid (rows, cols) they tile."""

    def __init__(self, config: ZSEConfig) -> None:
        super().__init__()
        library, _, name = config.backbone.partition(":")
        self.vit = library == "timm" and name.startswith(("vit_", "deit_"))
        if self.vit:
            built = create_backbone(config.backbone, pretrained=config.pretrained, image_size=config.image_size,
                                    img_size=config.image_size)
            self.net = built.module
            self.width = int(self.net.embed_dim)
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
            self.project = nn.Linear(fmap.shape[1], config.width)
        self.preprocess = built.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.vit:
            tokens = self.net.patch_embed(images)
            return tokens + self.net.pos_embed[:, self.net.num_prefix_tokens:]
        return self.project(self.net(images).flatten(2).transpose(1, 2))


class CrossAttention(nn.Module):
    """One block: the query image's tokens attend to the other image's tokens (pre-norm, residual, MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_query, self.norm_other, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attended query tokens, attention weights (B, Lq, Lo) averaged over heads)."""
        context = self.norm_other(other)
        attended, weights = self.attention(self.norm_query(query), context, context, need_weights=True)
        query = query + attended
        return query + self.mlp(self.norm_mlp(query)), weights


class RelationNetwork(nn.Module):
    """Token-level relation: each token, after attending to the other image, is compared with that image's own
    tokens; its top-k cosines (its local putative matches) go through a kernel MLP into a token score. Token
    scores are pooled with learned importance weights (so blank background tokens need not count) into a logit."""

    def __init__(self, width: int, top_k: int, hidden: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.kernel = nn.Sequential(nn.Linear(top_k, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.importance = nn.Linear(width, 1)

    def _side(self, attended: torch.Tensor, own: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cosine = F.normalize(attended, dim=-1) @ F.normalize(other, dim=-1).transpose(1, 2)  # (B, L, L_other)
        k = min(self.top_k, cosine.shape[2])
        scores = self.kernel(cosine.topk(k, dim=2).values)[..., 0]  # (B, L)
        weights = torch.softmax(self.importance(own)[..., 0], dim=1)
        return (weights * scores).sum(dim=1), scores, weights, cosine

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor, sketch_attended: torch.Tensor,
                photo_attended: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tokens of B pairs, before and after cross-attention → score (B,) in (0, 1), each side's token scores
        and importances, and the sketch-to-photo cosine matrix (B, Ls, Lp)."""
        sketch_logit, sketch_scores, sketch_weights, cosine = self._side(sketch_attended, sketch, photo)
        photo_logit, photo_scores, photo_weights, _ = self._side(photo_attended, photo, sketch)
        return {"score": torch.sigmoid((sketch_logit + photo_logit) / 2), "sketch_tokens": sketch_scores,
                "photo_tokens": photo_scores, "sketch_weights": sketch_weights, "photo_weights": photo_weights,
                "cosine": cosine}


class ZSENet(nn.Module):
    """Tokenizer + self-attention with [cls] and [ret] + cross-attention + relation network."""

    def __init__(self, config: ZSEConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config)
        width = self.tokenizer.width
        self.special = nn.Parameter(torch.randn(1, 2, width) * 0.02)  # [cls], [ret]
        self.domain = nn.Parameter(torch.zeros(2, width))
        if self.tokenizer.vit:
            self.encoder = None
        else:
            self.position = nn.Parameter(torch.randn(1, self.num_patches, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, config.heads, int(width * config.mlp_ratio), dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, config.depth, norm=nn.LayerNorm(width),
                                                 enable_nested_tensor=False)
        self.retrieval_head = nn.Linear(width, config.embedding_dim)
        self.classifier = nn.Linear(width, num_classes)
        self.cross = CrossAttention(width, config.heads, config.mlp_ratio)
        self.relation = RelationNetwork(width, config.relation_top_k, config.relation_hidden)
        self.edges = EdgeMap()
        add_statistics(self, self.tokenizer.preprocess.mean, self.tokenizer.preprocess.std)

    @property
    def grid(self) -> tuple[int, int]:
        return self.tokenizer.grid

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode_tokens(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Images in [0, 1] → encoded tokens (B, 2 + L, width): [cls], [ret], then the patches row by row."""
        if domain == "photo" and self.config.photo_edges:
            images = self.edges(images)
        patches = self.tokenizer(standardise(images, self))
        batch = patches.shape[0]
        domain_embedding = self.domain[0 if domain == "sketch" else 1]
        if self.encoder is None:  # a ViT: its own [cls] (with position) first, then [ret], then its blocks
            vit = self.tokenizer.net
            cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(batch, -1, -1)
            tokens = torch.cat([cls, self.special[:, 1:].expand(batch, -1, -1), patches], 1) + domain_embedding
            return vit.norm(vit.blocks(tokens))
        tokens = torch.cat([self.special.expand(batch, -1, -1), patches + self.position], 1) + domain_embedding
        return self.encoder(tokens)

    def retrieval_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.retrieval_head(tokens[:, 1]), dim=1)

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """The fast path: images in [0, 1] → unit [ret] embeddings."""
        return self.retrieval_embedding(self.encode_tokens(images, domain))

    def relate(self, sketch_tokens: torch.Tensor, photo_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoded tokens of B pairs → cross-attention both ways → relation network (plus attention maps)."""
        sketch, photo = sketch_tokens[:, 2:], photo_tokens[:, 2:]
        sketch_attended, sketch_to_photo = self.cross(sketch, photo)
        photo_attended, photo_to_sketch = self.cross(photo, sketch)
        out = self.relation(sketch, photo, sketch_attended, photo_attended)
        return {**out, "sketch_to_photo": sketch_to_photo, "photo_to_sketch": photo_to_sketch}

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: embeddings, class logits, and relation scores of the given pairs and of mismatched
        pairs (each sketch against the next sample's photo)."""
        sketch_tokens, photo_tokens = self.encode_tokens(sketches, "sketch"), self.encode_tokens(photos, "photo")
        shifted = photo_tokens.roll(1, dims=0)
        relation = self.relate(torch.cat([sketch_tokens, sketch_tokens]), torch.cat([photo_tokens, shifted]))
        return {"sketch": self.retrieval_embedding(sketch_tokens), "photo": self.retrieval_embedding(photo_tokens),
                "logits": self.classifier(torch.cat([sketch_tokens[:, 0], photo_tokens[:, 0]])),
                "relation": relation["score"]}


def batch_hard_triplet(sketch: torch.Tensor, photo: torch.Tensor, sketch_labels: torch.Tensor,
                       photo_labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Each sketch, its paired photo as positive, the most similar other-category photo as negative."""
    similarity = sketch @ photo.T
    positive = similarity.diagonal()
    different = sketch_labels[:, None] != photo_labels[None, :]
    if not different.any():
        return similarity.sum() * 0.0
    hardest = similarity.masked_fill(~different, float("-inf")).max(dim=1).values
    valid = torch.isfinite(hardest)
    return F.relu(margin + hardest[valid] - positive[valid]).mean()


def zse_losses(net: ZSENet, out: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and their weighted sum under ``total``."""
    config = net.config
    sketch, photo = out["sketch"].float(), out["photo"].float()
    positive = torch.ones_like(batch.sketch_labels, dtype=torch.float32)
    mismatched = (batch.sketch_labels == batch.photo_labels.roll(1)).float()
    terms = {
        "triplet": batch_hard_triplet(sketch, photo, batch.sketch_labels, batch.photo_labels, config.margin),
        "instance": cross_modal_infonce(sketch, photo, batch.same_instance, config.temperature),
        "classification": F.cross_entropy(out["logits"].float(), torch.cat([batch.sketch_labels, batch.photo_labels])),
        "relation": F.mse_loss(out["relation"].float(), torch.cat([positive, mismatched])),
    }
    return weighted_total(terms, config.loss_weights)


@register_method("zse")
class ZSE(Method):
    """ZSE-SBIR behind the method contract: the base builds ``ZSENet`` from the config, feeds it [0, 1] pixels,
    augments with style jitter and exports one encoder per domain (its ``[ret]`` embedding)."""

    config_class = ZSEConfig
    network = ZSENet

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return zse_losses(net, outputs, batch)

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The pretrained tokenizer at ``lr · tokenizer_lr_factor`` (a ViT's blocks too), the rest at ``lr``."""
        return two_speed_groups(net, net.tokenizer.net, lr, self.config.tokenizer_lr_factor)

    def exported_class(self) -> type[TorchRetrievalModel]:
        """Encoders plus the relation network's capabilities: re-scoring, explanations, synthesis."""
        from models.zse_explain import ExplainableZSE

        return ExplainableZSE
