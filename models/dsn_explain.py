"""Why DSN matches a sketch and a photo: an exact decomposition of its score into patch pairs.

DSN's embedding head is linear over the backbone's feature map (flattened, or average-pooled), so each domain's
embedding is a sum of per-location terms plus a bias: ``e = Σ_l u_l + b`` with ``u_l = W_l · F_l``. The cosine
score then splits exactly into patch-pair terms ``C[l, m] = u_l · v_m / (|e_s| |e_p|)`` plus bias terms. The
strongest positive ``C[l, m]`` are the correspondences the match relies on; each patch's total (its row or column
of ``C``, positive part) is its heatmap. No gradients, no sampling: the parts add up to the served score.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.interface import TorchRetrievalModel
from sbir.explanations import MatchExplanation, PatchMatch


class ExplainableDSN(TorchRetrievalModel):
    """DSN's encoders behind the model interface, with the explain capability (``MatchExplainer``)."""

    def __init__(self, net: torch.nn.Module, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.net = net

    @torch.inference_mode()
    def _patch_terms(self, image: Image.Image, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-location embedding terms (D, H, W), the head's bias (D,)) of one image."""
        net, pre = self.net, self.preprocess(domain)
        batch = pre.normalize(pre.load(image)[None].to(self.device))  # [0, 1] pixels: DSN standardises itself
        net.condition(*((1, 0) if domain == "sketch" else (0, 1)))
        fmap = net.backbone[0](net._input(batch, domain))[0].float()  # (C, H, W), the map the head reads
        head = net.heads[domain]
        channels, height, width = fmap.shape
        if net.config.pool == "flatten":
            weight = head.weight.float().view(-1, channels, height, width)
            terms = torch.einsum("dchw,chw->dhw", weight, fmap)
        else:  # average pooling: each location contributes its share of the mean
            terms = torch.einsum("dc,chw->dhw", head.weight.float(), fmap) / (height * width)
        return terms, head.bias.float()

    @torch.inference_mode()
    def explain(self, sketch: Image.Image, photo: Image.Image, top: int = 10) -> MatchExplanation:
        u, bias_s = self._patch_terms(sketch, "sketch")
        v, bias_p = self._patch_terms(photo, "photo")
        grid_s, grid_p = tuple(u.shape[1:]), tuple(v.shape[1:])
        e_s, e_p = u.flatten(1).sum(1) + bias_s, v.flatten(1).sum(1) + bias_p
        norm = float(e_s.norm() * e_p.norm())
        pairs = (u.flatten(1).T @ v.flatten(1)) / norm  # (Ls, Lp)
        order = torch.argsort(pairs.flatten(), descending=True)[: max(0, top)]
        matches = tuple(PatchMatch(divmod(int(i) // pairs.shape[1], grid_s[1]),
                                   divmod(int(i) % pairs.shape[1], grid_p[1]), float(pairs.flatten()[i]))
                        for i in order if float(pairs.flatten()[i]) > 0)

        def heat(totals: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
            positive = totals.clamp(min=0)
            peak = float(positive.max())
            return (positive / peak if peak > 0 else positive).view(grid).cpu().numpy().astype(np.float64)

        return MatchExplanation(score=float(e_s @ e_p) / norm, sketch_grid=grid_s, photo_grid=grid_p,
                                matches=matches, sketch_heatmap=heat(pairs.sum(1), grid_s),
                                photo_heatmap=heat(pairs.sum(0), grid_p))
