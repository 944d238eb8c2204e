"""The one interface everything downstream of training sees (DESIGN.md, "The model interface").

A retrieval model is a sketch encoder and a photo encoder mapping batches of images to L2-normalised
embeddings of one dimension. Methods may add capabilities: re-scoring a sketch–photo pair, explaining a match.
Baselines implement the same interface, so they are evaluated, registered and served like trained methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sbir.images import square_rgb

class RetrievalModel(ABC):
    """Sketch and photo encoders into one L2-normalised embedding space."""

    name: str = "model"
    embedding_dim: int

    @abstractmethod
    def encode_sketches(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, embedding_dim) float32, unit rows."""

    @abstractmethod
    def encode_photos(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, embedding_dim) float32, unit rows."""

    def encode(self, images: Sequence[Image.Image], domain: str) -> np.ndarray:
        """Dispatch on the manifest's domain name."""
        if domain == "sketch":
            return self.encode_sketches(images)
        if domain == "photo":
            return self.encode_photos(images)
        raise ValueError(f"unknown domain '{domain}'; expected 'sketch' or 'photo'")

    @property
    def capabilities(self) -> frozenset[str]:
        """Optional abilities beyond the two encoders (e.g. "score_pairs", "explain")."""
        return frozenset()

    def describe(self) -> dict[str, Any]:
        """What a report or a model registry shows about the model."""
        return {"name": self.name, "embedding_dim": self.embedding_dim, "capabilities": sorted(self.capabilities)}


@dataclass(frozen=True)
class Preprocess:
    """How an encoder wants its images: square size, channel statistics, and padding to a square."""

    image_size: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image (any mode) → (3, size, size) float tensor; transparency becomes white, aspect is kept."""
        image = square_rgb(image, self.image_size)
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (array - mean) / std

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self(image) for image in images])


class TorchRetrievalModel(RetrievalModel):
    """Adapter: two torch modules (possibly the same one) plus their preprocessing → the interface."""

    def __init__(self, sketch_encoder: torch.nn.Module, photo_encoder: torch.nn.Module, preprocess: Preprocess,
                 embedding_dim: int, name: str = "torch", device: str | torch.device = "cpu") -> None:
        self.sketch_encoder = sketch_encoder.eval().to(device)
        self.photo_encoder = photo_encoder.eval().to(device)
        self.preprocess = preprocess
        self.embedding_dim = embedding_dim
        self.name = name
        self.device = torch.device(device)

    @torch.inference_mode()
    def _encode(self, module: torch.nn.Module, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        batch = self.preprocess.batch(images).to(self.device)
        features = torch.nn.functional.normalize(module(batch).float(), dim=1)
        return features.cpu().numpy()

    def encode_sketches(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._encode(self.sketch_encoder, images)

    def encode_photos(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._encode(self.photo_encoder, images)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_size": self.preprocess.image_size}
