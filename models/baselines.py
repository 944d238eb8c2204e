"""Baselines measured in the same harness as trained methods, so every number has a reference.

- ``baseline_random``: a randomly initialised CNN (timm), one encoder for both domains. The floor any
  learned model must clear; it is not chance level, since random conv features still see shape.
- ``baseline_imagenet``: frozen ImageNet features (EfficientNet-Lite0 from its package by default), one encoder
  for both domains, cut after a stage and pooled; photos optionally as their edge map. What pretraining alone
  gives, before any sketch is seen.
- ``baseline_hog``: a classical matcher. Photos become edge maps (Canny), sketches ink maps; both are
  described by HOG (unsigned orientations, so stroke polarity does not matter) and compared by cosine.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from skimage.feature import canny, hog
from skimage.filters import gaussian
from torch import nn

from models.backbones import create_backbone
from models.imaging import EdgeMap, add_statistics, standardise
from models.interface import Preprocess, RetrievalModel, TorchRetrievalModel, check_domain
from models.registry import register_baseline
from sbir.ranking import l2_normalize
from sbir.config import Count, NonNegativeFloat, PositiveFloat, PositiveInt


@register_baseline("baseline_random")
def random_encoder(backbone: str, image_size: PositiveInt, seed: int) -> RetrievalModel:
    """A seeded, randomly initialised backbone shared by both domains."""
    torch.manual_seed(seed)
    built = create_backbone(backbone, pretrained=None, image_size=image_size)
    return TorchRetrievalModel(built.module, built.module, built.preprocess, built.feature_dim, name="baseline_random")


class FrozenFeatures(nn.Module):
    """[0, 1] images → (optional edge map) → standardise → backbone (cut at a stage) → pooled, flattened."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], pool: str,
                 edges: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.edges = EdgeMap() if edges else None
        self.pool = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1), "flatten": nn.Identity()}[pool]
        add_statistics(self, mean, std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.edges is not None:
            images = self.edges(images)
        features = self.backbone(standardise(images, self))
        return self.pool(features).flatten(1)


@register_baseline("baseline_imagenet")
def imagenet_encoder(backbone: str, pretrained: str | None, image_size: PositiveInt, feature_level: Count | None,
                     pool: Literal["avg", "max", "flatten"], photo_edges: bool, sketch_ink: bool) -> RetrievalModel:
    """Frozen ImageNet features of one backbone for both domains (photos as edge maps if asked). Defaults: the
    best of the layer/pooling/resolution sweep in benchmarks/results/pretrained_ablation.md (EfficientNet-Lite0
    cut after stage 2, its 8×8 map kept spatial, at 64 px, colour photos)."""
    extra: dict[str, Any] = {"features_only": True, "out_indices": (feature_level,)} if feature_level is not None \
        else {"global_pool": ""}
    built = create_backbone(backbone, pretrained=pretrained, image_size=image_size, **extra)
    mean, std = built.preprocess.mean, built.preprocess.std
    sketch = FrozenFeatures(built.module, mean, std, pool, edges=False).eval()
    photo = FrozenFeatures(built.module, mean, std, pool, edges=photo_edges).eval()
    with torch.no_grad():
        dim = int(sketch(torch.zeros(1, 3, image_size, image_size)).shape[1])
    plain = Preprocess(image_size=image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    preprocess = {"sketch": Preprocess(image_size, plain.mean, plain.std, ink=sketch_ink), "photo": plain}
    return TorchRetrievalModel(sketch, photo, preprocess, dim, name="baseline_imagenet")


@register_baseline("baseline_hog")
class HogEdgeMatcher(RetrievalModel):
    """HOG descriptors of line maps: Canny edges for photos, ink for sketches."""

    def __init__(self, image_size: PositiveInt, pixels_per_cell: PositiveInt, orientations: PositiveInt,
                 canny_sigma: PositiveFloat, blur_sigma: NonNegativeFloat) -> None:
        self.image_size = image_size
        self.pixels_per_cell = pixels_per_cell
        self.orientations = orientations
        self.canny_sigma = canny_sigma
        self.blur_sigma = blur_sigma
        cells = image_size // pixels_per_cell
        self.embedding_dim = (cells - 1) ** 2 * 4 * orientations  # 2×2-cell blocks, stride one cell

    def preprocess(self, domain: str) -> Preprocess:
        check_domain(domain)
        return Preprocess(image_size=self.image_size)

    @staticmethod
    def _gray(image: torch.Tensor) -> np.ndarray:
        """uint8 (3, S, S) → grey levels in [0, 1] (Pillow's luma, as the images were always measured)."""
        rgb = Image.fromarray(image.permute(1, 2, 0).numpy())
        return np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0

    def _describe(self, line_map: np.ndarray) -> np.ndarray:
        smooth = gaussian(line_map, sigma=self.blur_sigma) if self.blur_sigma else line_map
        return hog(smooth, orientations=self.orientations, pixels_per_cell=(self.pixels_per_cell,) * 2,
                   cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True)

    def encode_batch(self, batch: torch.Tensor, domain: str) -> np.ndarray:
        """Sketches: ink (dark pixels); photos: Canny edges; both described by HOG."""
        if check_domain(domain) == "sketch":
            maps = [(self._gray(image) < 0.5).astype(np.float32) for image in batch]
        else:
            maps = [canny(self._gray(image), sigma=self.canny_sigma).astype(np.float32) for image in batch]
        if not maps:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return l2_normalize(np.stack([self._describe(m) for m in maps]))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pixels_per_cell": self.pixels_per_cell}
