"""ZSE-SBIR's relation network behind the model interface: RN scoring, explanations and synthesis.

- ``score_pairs``: the relation score of each (sketch, photo) pair (``PairScorer``: re-ranks a top-k).
- ``score_grid``: the paper's RN mode, every sketch against every photo (``GridScorer``), in bounded pair batches.
- ``explain``: the anchor correspondences the relation network relies on: gradient × input of the relation MLP
  on the anchor cosine map; each strong sketch anchor is joined to the photo anchor it draws most score from,
  and the heatmaps sum each side's positive attributions.
- ``synthesize``: patch replacement: every sketch anchor takes the gallery photo patch it matches best (cosine of
  the reduced cross-attended tokens, over all given photos); the picture is those patches in the sketch's layout.
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
    pair_batch = 256  # pairs through the cross-attention at once in score_grid

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
    def score_grid(self, sketches: torch.Tensor, photos: torch.Tensor) -> np.ndarray:
        """RN mode: every sketch against every photo (S, P), each image encoded once, the cross-attention and
        relation network run over ``pair_batch`` pairs at a time (memory bounded by that, not by S × P)."""
        sketch_tokens = self._cached_tokens(sketches, "sketch")
        photo_tokens = self._cached_tokens(photos, "photo")
        count = len(photos)
        scores = torch.empty(len(sketches) * count)
        for start in range(0, len(scores), self.pair_batch):
            pairs = torch.arange(start, min(start + self.pair_batch, len(scores)))
            relation = self.net.relate(sketch_tokens[pairs // count], photo_tokens[pairs % count])
            scores[pairs] = relation["score"].float().cpu()
        return scores.view(len(sketches), count).numpy()

    def _relation_attribution(self, sketch: Image.Image, photo: Image.Image) -> tuple[float, torch.Tensor]:
        """The pair's relation score and, per (sketch anchor, photo anchor), gradient × input of the relation
        network on the cosine map: how much each correspondence raises the score."""
        with torch.no_grad():
            sketch_tokens, photo_tokens = self.net.cross(self._tokens(self._load([sketch], "sketch"), "sketch"),
                                                         self._tokens(self._load([photo], "photo"), "photo"))
            cosine = self.net.cosine(self.net.reduced(sketch_tokens[:, 1:]), self.net.reduced(photo_tokens[:, 1:]))
        cosine = cosine.float().detach().requires_grad_(True)
        with torch.enable_grad():
            score = self.net.relation(cosine)
            (gradient,) = torch.autograd.grad(score.sum(), cosine)
        return float(score.detach()[0]), (gradient * cosine).detach()[0]

    def explain(self, sketch: Image.Image, photo: Image.Image, top: int = 10) -> MatchExplanation:
        score, attribution = self._relation_attribution(sketch, photo)
        grid = tuple(self.net.relation_grid)
        share = attribution.clamp(min=0)
        sketch_share, photo_share = share.sum(dim=1), share.sum(dim=0)
        strongest = [int(i) for i in torch.argsort(sketch_share, descending=True)[: max(0, top)] if sketch_share[i] > 0]
        peak = float(sketch_share.max()) or 1.0
        matches = tuple(PatchMatch(divmod(i, grid[1]), divmod(int(share[i].argmax()), grid[1]),
                                   float(sketch_share[i]) / peak) for i in strongest)
        return MatchExplanation(score=score, sketch_grid=grid, photo_grid=grid, matches=matches,
                                sketch_heatmap=_unit_range(sketch_share).reshape(grid),
                                photo_heatmap=_unit_range(photo_share).reshape(grid))

    @torch.inference_mode()
    def synthesize(self, sketch: Image.Image, photos: Sequence[Image.Image], size: int = 128) -> Synthesis:
        if not photos:
            raise ValueError("synthesize needs at least one gallery photo")
        grid = tuple(self.net.relation_grid)
        photo_tokens = self._tokens(self._load(photos, "photo"), "photo")
        sketch_tokens = self._tokens(self._load([sketch], "sketch"), "sketch").expand(len(photos), -1, -1)
        cosine = self.net.relate(sketch_tokens, photo_tokens)["cosine"]  # (P, As, Ap)
        best_per_photo, token = cosine.max(dim=2)  # (P, As)
        weight, photo = best_per_photo.max(dim=0)  # (As,)
        source_token = token.gather(0, photo[None])[0]
        rows, cols = source_token // grid[1], source_token % grid[1]
        sources = torch.stack([photo, rows, cols], dim=1).view(grid[0], grid[1], 3).cpu().numpy().astype(np.int64)
        image = assemble_patches(photos, sources, size)
        return Synthesis(image=image, grid=grid, sources=sources,
                         weights=weight.view(grid).float().cpu().numpy().astype(np.float64), num_photos=len(photos))
