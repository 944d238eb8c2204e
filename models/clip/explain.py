"""Why CLIP prompt learning matches a sketch and a photo: patch correspondences and attribution heatmaps.

- Correspondences: the last layer's patch tokens of each image, through the tower's ``ln_post`` and projection
  (the space the class token is scored in), compared by cosine. Each sketch patch is matched to its most similar
  photo patch; a match weighs ``cos · sqrt(h_s · h_p)`` (the two patches' heatmap values), so matches between
  patches the score does not rely on fall away.
- Heatmaps: gradient × activation of the served score (the cosine of the two embeddings) at the input of the
  last transformer layer, summed over channels, positive part, scaled to [0, 1]. Chosen over the class token's
  attention because it explains *this pair's score* (a photo's map depends on the sketch it is matched with)
  and it is signed, whereas the class token's attention is the same whatever the other image, mixes heads
  and ignores how the attended values project onto the score. The last layer's own patch outputs cannot be
  used: the class token reads the patches at that layer's input, not its output.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.interface import TorchRetrievalModel
from sbir.explanations import MatchExplanation, PatchMatch


class ExplainableClipPrompt(TorchRetrievalModel):
    """The prompted CLIP encoders behind the model interface, with the explain capability."""

    def __init__(self, net: torch.nn.Module, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.net = net

    def _trace(self, image: Image.Image, domain: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(unit embedding (D,), the last layer's input tokens (leaf, requires grad), patch features (L, D))."""
        pre = self.preprocess(domain)
        batch = pre.normalize(pre.load(image)[None].to(self.device))
        tokens, last_input = self.net.sequence(batch, domain, capture_last=True)
        embedding = F.normalize(self.net.pool(tokens).float(), dim=-1)[0]
        return embedding, last_input, self.net.patch_features(tokens)[0].detach().float()

    def _heatmap(self, last_input: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Gradient × activation over the patch positions, positive part, peak 1."""
        patches = 1 + self.net.prompt_count
        relevance = (grad * last_input).sum(dim=-1)[0, patches:].float().clamp(min=0)
        peak = float(relevance.max())
        return relevance / peak if peak > 0 else relevance

    def explain(self, sketch: Image.Image, photo: Image.Image, top: int = 10) -> MatchExplanation:
        self.net.eval()
        with torch.enable_grad():
            e_s, input_s, patches_s = self._trace(sketch, "sketch")
            e_p, input_p, patches_p = self._trace(photo, "photo")
            score = e_s @ e_p
            # gradients of the score for the two tokens only: the network's parameters get none
            grad_s, grad_p = torch.autograd.grad(score, [input_s, input_p])
        heat_s, heat_p = self._heatmap(input_s.detach(), grad_s), self._heatmap(input_p.detach(), grad_p)
        grid = self.net.grid
        cosine = F.normalize(patches_s, dim=-1) @ F.normalize(patches_p, dim=-1).T  # (Ls, Lp)
        best, partner = cosine.max(dim=1)
        weights = best * (heat_s * heat_p[partner]).sqrt()
        order = torch.argsort(weights, descending=True)[: max(0, top)]
        matches = tuple(PatchMatch(divmod(int(cell), grid[1]), divmod(int(partner[cell]), grid[1]),
                                   float(weights[cell])) for cell in order if float(weights[cell]) > 0)
        return MatchExplanation(score=float(score.detach()), sketch_grid=grid, photo_grid=grid, matches=matches,
                                sketch_heatmap=heat_s.view(grid).cpu().numpy().astype(np.float64),
                                photo_heatmap=heat_p.view(grid).cpu().numpy().astype(np.float64))
