"""Losses of the DSN-style method (Wang et al., IJCAI'21), written for masks of positives.

- ``supervised_contrastive``: SupCon (Khosla et al.) over all views of a batch; with sketch and photo views
  of each sample it is DSN's cross-modal supervised contrastive loss.
- ``cross_modal_infonce``: sketch→photo InfoNCE whose positives are the photos a sketch was drawn from (an
  instance-level term for fine-grained retrieval; DSN itself is category-level).
- ``SketchMemoryBank``: DSN's category-specific sketch memory: the last ``size`` sketch embeddings of every
  category; photos are pulled to their category's sketch prototype and pushed from the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Mean over anchors of -log softmax-mass on same-label views (self excluded). ``features``: unit rows."""
    n = features.shape[0]
    logits = features @ features.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(dim=1)
    valid = counts > 0
    if not valid.any():
        return features.sum() * 0.0
    mean_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)[valid] / counts[valid]
    return -mean_log_prob.mean()


def cross_modal_infonce(sketch: torch.Tensor, photo: torch.Tensor, positives: torch.Tensor,
                        temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE between unit sketch and photo rows; ``positives[i, j]`` marks matching pairs."""
    logits = sketch @ photo.T / temperature
    losses = []
    for scores, mask in ((logits, positives), (logits.T, positives.T)):
        log_prob = scores - torch.logsumexp(scores, dim=1, keepdim=True)
        counts = mask.sum(dim=1)
        valid = counts > 0
        if valid.any():
            losses.append(-(torch.where(mask, log_prob, torch.zeros_like(log_prob)).sum(dim=1)[valid]
                            / counts[valid]).mean())
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


class SketchMemoryBank(torch.nn.Module):
    """Per-category ring buffers of sketch embeddings (buffers: saved and restored with the model)."""

    def __init__(self, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("memory", torch.zeros(num_classes, size, dim))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.int64))
        self.register_buffer("cursor", torch.zeros(num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Write detached sketch embeddings into their categories' buffers, oldest first out."""
        size = self.memory.shape[1]
        for row, label in zip(embeddings.detach().float(), labels.tolist()):
            slot = int(self.cursor[label])
            self.memory[label, slot] = row
            self.cursor[label] = (slot + 1) % size
            self.filled[label] = min(int(self.filled[label]) + 1, size)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit mean of each category's stored sketches, and which categories have any."""
        size = self.memory.shape[1]
        weights = (torch.arange(size, device=self.memory.device)[None, :] < self.filled[:, None]).float()
        sums = (self.memory * weights[..., None]).sum(dim=1)
        present = self.filled > 0
        return F.normalize(sums, dim=1), present

    def loss(self, photo_embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
        """Cross-entropy of photos against the sketch prototypes of the categories present in memory."""
        prototypes, present = self.prototypes()
        known = present[labels]
        if not known.any():
            return photo_embeddings.sum() * 0.0
        logits = photo_embeddings[known] @ prototypes.T / temperature
        logits = logits.masked_fill(~present[None, :], float("-inf"))
        return F.cross_entropy(logits, labels[known])
