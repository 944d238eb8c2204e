"""Fixed image layers used inside networks (so serving needs no extra preprocessing): the Sobel edge map and
the channel standardisation of a backbone's statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EdgeMap(nn.Module):
    """Dark lines on white where the grey level changes (Sobel magnitude), as 3 channels in [0, 1].

    Photos enter as their edge map to look like line art, as sketches do."""

    def __init__(self) -> None:
        super().__init__()
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([sobel, sobel.T])[:, None], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gray = F.pad(images.mean(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")  # no edge at the border
        gradients = F.conv2d(gray, self.sobel.to(images.dtype))
        magnitude = gradients.pow(2).sum(dim=1, keepdim=True).add(1e-12).sqrt()
        return (1 - magnitude.clamp(max=1.0)).expand(-1, 3, -1, -1)


def add_statistics(module: nn.Module, mean: Sequence[float], std: Sequence[float], persistent: bool = True) -> None:
    """Per-channel statistics as ``module``'s buffers ``mean`` and ``std`` (1, 3, 1, 1), saved with its weights
    unless ``persistent`` is false."""
    module.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=persistent)
    module.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=persistent)


def standardise(images: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Images in [0, 1] → standardised with ``module``'s statistics (``add_statistics``)."""
    return (images - module.mean) / module.std
