"""ZSE-SBIR's relation network behind the model interface: pair re-scoring, explanations and synthesis.

- ``score_pairs``: the relation score of each (sketch, photo) pair (``PairScorer``: re-ranks a top-k).
- ``explain``: the sketch tokens the relation network relies on most (highest token scores), each joined to the
  photo token it matches best after cross-attention; heatmaps are the token scores of each side.
- ``synthesize``: patch replacement: every sketch token takes the gallery photo patch it matches best (cosine of
  the cross-attended tokens, over all given photos); the picture is those patches in the sketch's layout.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from models.interface import TorchRetrievalModel
from sbir.explanations import MatchExplanation, PatchMatch, Synthesis, assemble_patches


def _unit_range(values: torch.Tensor) -> np.ndarray:
    """Min–max scaled into [0, 1] (all zeros when flat)."""
    values = values.float()
    spread = float(values.max() - values.min())
    scaled = (values - values.min()) / spread if spread > 0 else torch.zeros_like(values)
    return scaled.cpu().numpy().astype(np.float64)


class ExplainableZSE(TorchRetrievalModel):
    """ZSE-SBIR's encoders plus the relation network's capabilities."""

    cache_bytes = 256 * 2**20  # encoded tokens kept for re-scoring, least recently used dropped beyond this

    def __init__(self, net: torch.nn.Module, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.net = net
        self._cache: OrderedDict[tuple[str, bytes], torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def _cached_tokens(self, batch: torch.Tensor, domain: str) -> torch.Tensor:
        """Tokens of uint8 images, each distinct image encoded once: re-scoring the top-k of many queries over one
        gallery meets the same photos again and again (keys are the pixels' digest)."""
        keys = [(domain, hashlib.blake2b(image.numpy().tobytes(), digest_size=16).digest()) for image in batch.cpu()]
        first = {key: row for row, key in reversed(list(enumerate(keys)))}  # one row per distinct image
        with self._lock:
            found = {key: self._cache[key] for key in first if key in self._cache}
            for key in found:
                self._cache.move_to_end(key)
        missing = [key for key in first if key not in found]
        if missing:
            encoded = self._tokens(batch[[first[key] for key in missing]], domain)
            fresh = {key: tokens.clone() for key, tokens in zip(missing, encoded)}  # no view pins the batch
            found.update(fresh)
            with self._lock:
                for key, tokens in fresh.items():
                    if key not in self._cache:
                        self._cache[key] = tokens
                        self._cached_bytes += tokens.numel() * tokens.element_size()
                while self._cached_bytes > self.cache_bytes and self._cache:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached_bytes -= dropped.numel() * dropped.element_size()
        return torch.stack([found[key] for key in keys])

    def _tokens(self, batch: torch.Tensor, domain: str) -> torch.Tensor:
        images = self.preprocess(domain).normalize(batch.to(self.device))
        return self.net.encode_tokens(images, domain)

    def _load(self, images: Sequence[Image.Image], domain: str) -> torch.Tensor:
        preprocess = self.preprocess(domain)
        return torch.stack([preprocess.load(image) for image in images])

    @torch.inference_mode()
    def score_pairs(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        if len(sketches) != len(photos):
            raise ValueError(f"score_pairs needs as many sketches as photos, got {len(sketches)} and {len(photos)}")
        if len(sketches) == 0:
            return np.zeros(0, dtype=np.float32)
        relation = self.net.relate(self._cached_tokens(sketches, "sketch"), self._cached_tokens(photos, "photo"))
        return relation["score"].float().cpu().numpy()

    @torch.inference_mode()
    def explain(self, sketch: Image.Image, photo: Image.Image, top: int = 10) -> MatchExplanation:
        relation = self.net.relate(self._tokens(self._load([sketch], "sketch"), "sketch"),
                                   self._tokens(self._load([photo], "photo"), "photo"))
        grid = tuple(self.net.grid)
        # a token's share of the match: its importance times its (positive) token score
        sketch_share = relation["sketch_weights"][0] * relation["sketch_tokens"][0].clamp(min=0)
        photo_share = relation["photo_weights"][0] * relation["photo_tokens"][0].clamp(min=0)
        cosine = relation["cosine"][0]
        strongest = [int(i) for i in torch.argsort(sketch_share, descending=True)[: max(0, top)] if sketch_share[i] > 0]
        peak = float(sketch_share.max()) or 1.0
        matches = tuple(PatchMatch(divmod(i, grid[1]), divmod(int(cosine[i].argmax()), grid[1]),
                                   float(sketch_share[i]) / peak) for i in strongest)
        return MatchExplanation(score=float(relation["score"][0]), sketch_grid=grid, photo_grid=grid,
                                matches=matches, sketch_heatmap=_unit_range(sketch_share).reshape(grid),
                                photo_heatmap=_unit_range(photo_share).reshape(grid))

    @torch.inference_mode()
    def synthesize(self, sketch: Image.Image, photos: Sequence[Image.Image], size: int = 128) -> Synthesis:
        if not photos:
            raise ValueError("synthesize needs at least one gallery photo")
        grid = tuple(self.net.grid)
        photo_tokens = self._tokens(self._load(photos, "photo"), "photo")
        sketch_tokens = self._tokens(self._load([sketch], "sketch"), "sketch").expand(len(photos), -1, -1)
        cosine = self.net.relate(sketch_tokens, photo_tokens)["cosine"]  # (P, Ls, Lp)
        best_per_photo, token = cosine.max(dim=2)  # (P, Ls)
        weight, photo = best_per_photo.max(dim=0)  # (Ls,)
        source_token = token.gather(0, photo[None])[0]
        rows, cols = source_token // grid[1], source_token % grid[1]
        sources = torch.stack([photo, rows, cols], dim=1).view(grid[0], grid[1], 3).cpu().numpy().astype(np.int64)
        image = assemble_patches(photos, sources, size)
        return Synthesis(image=image, grid=grid, sources=sources,
                         weights=weight.view(grid).float().cpu().numpy().astype(np.float64), num_photos=len(photos))
