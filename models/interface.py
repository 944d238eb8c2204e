"""The one interface everything downstream of training sees (docs/architecture.md, "The model interface").

A retrieval model is a sketch encoder and a photo encoder mapping batches of images to L2-normalised
embeddings of one dimension. Each encoder declares its preprocessing (``Preprocess``): data-loader workers
decode an image to a uint8 tensor at the encoder's size (``Preprocess.load``); the model normalises whole
batches as tensors (``Preprocess.normalize``), on its device. Optional capabilities are typed protocols that
a model implements or not (``isinstance(model, PairScorer)``):

- ``PairScorer``: re-scores sketch–photo pairs (e.g. a relation network re-ranking a top-k);
- ``GridScorer``: scores every sketch against every photo (a relation network's exhaustive mode);
- ``MatchExplainer``: explains a match by patch correspondences (``sbir.explanations.MatchExplanation``);
- ``PatchSynthesizer``: assembles a photo-like picture for a sketch from gallery patches (``sbir.explanations
  .Synthesis``).

Baselines implement the same interface, so they are evaluated, registered and served like trained methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from sbir.explanations import MatchExplanation, Synthesis
from sbir.images import square_rgb
from sbir.ink import ink_strokes

DOMAINS = ("sketch", "photo")


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain '{domain}'; expected 'sketch' or 'photo'")
    return domain


@dataclass(frozen=True)
class Preprocess:
    """How an encoder wants its images: square size (aspect kept, padded white), channel statistics, and for
    sketches optionally ink normalisation (``sbir.ink``: contrast, centring, one stroke width)."""

    image_size: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    ink: bool = False

    def load(self, image: Image.Image) -> torch.Tensor:
        """PIL image (any mode) → (3, size, size) uint8 tensor; transparency becomes white. Runs in loader workers."""
        if self.ink:  # grey strokes: the three channels are equal
            return torch.from_numpy(ink_strokes(image, self.image_size))[None].expand(3, -1, -1).contiguous()
        array = np.asarray(square_rgb(image, self.image_size), dtype=np.uint8)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) on any device → float, scaled to [0, 1] then standardised per channel."""
        images = batch.float() / 255.0
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image → normalised (3, S, S) float tensor."""
        return self.normalize(self.load(image)[None])[0]

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.normalize(torch.stack([self.load(image) for image in images]))

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocess:
        return cls(image_size=int(values["image_size"]), mean=tuple(values["mean"]), std=tuple(values["std"]),
                   ink=bool(values.get("ink", False)))


@runtime_checkable
class PairScorer(Protocol):
    """Capability: score sketch–photo pairs directly (higher = better match), to re-rank a top-k."""

    def score_pairs(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        """Row i scores photo i against sketch i; both uint8 batches as the encoders' ``preprocess`` loads them."""


@runtime_checkable
class GridScorer(Protocol):
    """Capability: score every sketch against every photo directly (ZSE-SBIR's RN mode)."""

    def score_grid(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        """(S, P) scores, higher = better match; uint8 batches as the encoders' ``preprocess`` loads them."""


@runtime_checkable
class MatchExplainer(Protocol):
    """Capability: explain a match by the patch correspondences it relies on."""

    def explain(self, sketch: Image.Image, photo: Image.Image, top: int = 10) -> MatchExplanation:
        """The score, the ``top`` strongest patch correspondences and per-patch heatmaps of one pair."""


@runtime_checkable
class PatchSynthesizer(Protocol):
    """Capability: a photo-like picture for a sketch, each sketch patch replaced by the photo patch it matches."""

    def synthesize(self, sketch: Image.Image, photos: Sequence[Image.Image], size: int = 128) -> Synthesis:
        """Patches drawn from ``photos`` (e.g. the sketch's top-k), at ``size`` pixels square."""


CAPABILITIES: dict[str, type] = {"score_pairs": PairScorer, "score_grid": GridScorer, "explain": MatchExplainer,
                                 "synthesize": PatchSynthesizer}


class RetrievalModel(ABC):
    """Sketch and photo encoders into one L2-normalised embedding space."""

    name: str = "model"
    embedding_dim: int

    @abstractmethod
    def preprocess(self, domain: str) -> Preprocess:
        """What the domain's encoder takes (loader workers call its ``load``)."""

    @abstractmethod
    def encode_batch(self, batch: torch.Tensor, domain: str) -> np.ndarray:
        """uint8 (B, 3, S, S) images loaded by ``preprocess(domain)`` → (B, embedding_dim) float32 unit rows."""

    def encode(self, images: Sequence[Image.Image], domain: str) -> np.ndarray:
        """PIL images of one domain → embeddings (the service's path; bulk work goes through a loader)."""
        preprocess = self.preprocess(check_domain(domain))
        if len(images) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self.encode_batch(torch.stack([preprocess.load(image) for image in images]), domain)

    def encode_sketches(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode(images, "sketch")

    def encode_photos(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode(images, "photo")

    @property
    def capabilities(self) -> frozenset[str]:
        """Names of the typed capabilities this model implements."""
        return frozenset(name for name, protocol in CAPABILITIES.items() if isinstance(self, protocol))

    def describe(self) -> dict[str, Any]:
        """What a report or a model registry shows about the model."""
        return {"name": self.name, "embedding_dim": self.embedding_dim, "capabilities": sorted(self.capabilities),
                "preprocess": {domain: self.preprocess(domain).to_dict() for domain in DOMAINS}}


class TorchRetrievalModel(RetrievalModel):
    """Adapter: two torch modules (possibly sharing weights) plus each one's preprocessing → the interface."""

    def __init__(self, sketch_encoder: torch.nn.Module, photo_encoder: torch.nn.Module,
                 preprocess: Preprocess | dict[str, Preprocess], embedding_dim: int, name: str = "torch",
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.encoders = {"sketch": sketch_encoder.eval().to(self.device),
                         "photo": photo_encoder.eval().to(self.device)}
        self._preprocess = preprocess if isinstance(preprocess, dict) else dict.fromkeys(DOMAINS, preprocess)
        self.embedding_dim = embedding_dim
        self.name = name

    def preprocess(self, domain: str) -> Preprocess:
        return self._preprocess[check_domain(domain)]

    @torch.inference_mode()
    def encode_batch(self, batch: torch.Tensor, domain: str) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        images = self.preprocess(domain).normalize(batch.to(self.device))
        features = torch.nn.functional.normalize(self.encoders[domain](images).float(), dim=1)
        return features.cpu().numpy()

    def _modules(self) -> torch.nn.ModuleDict:
        sketch, photo = self.encoders["sketch"], self.encoders["photo"]
        return torch.nn.ModuleDict({"sketch": sketch} if sketch is photo else {"sketch": sketch, "photo": photo})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the encoders, each tensor once (what the encoders share is stored under one name)."""
        seen: set[tuple[int, tuple[int, ...]]] = set()
        out = {}
        for key, value in self._modules().state_dict().items():
            identity = (value.data_ptr(), tuple(value.shape))
            if value.numel() and identity in seen:
                continue
            seen.add(identity)
            out[key] = value
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what ``state_dict`` wrote; shared tensors are filled through the one name they were stored under."""
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ValueError(f"weights do not fit this model: missing {sorted(set(expected) - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - set(expected))[:5]}")
        self._modules().load_state_dict(state, strict=False)
