"""Losses of DSN (Wang et al., IJCAI'21), written for masks of positives.

- ``supervised_contrastive``: SupCon (Khosla et al.) over all views of a batch; with sketch and photo views
  of each sample it is DSN's cross-modal supervised contrastive loss.
- ``cross_modal_infonce``: sketch→photo InfoNCE whose positives are the photos a sketch was drawn from (an
  instance-level term for fine-grained retrieval; DSN itself is category-level).
- ``knowledge_preservation``: SAKE's term (Liu et al., ICCV'19) as DSN uses it: the student's ImageNet logits
  against a frozen ImageNet teacher's.
- ``SketchMemoryBank``: DSN's category-specific sketch memory: per category the ``size`` sketch features nearest
  the batch's photos of that category; photos are pulled to their category's centre (1 − cosine).
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


def knowledge_preservation(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """SAKE's knowledge preservation as DSN trains it: the cross-entropy of the student's ImageNet logits to the
    frozen teacher's softmax, averaged over the images given (DSN gives the photos)."""
    if len(student_logits) == 0:
        return student_logits.sum() * 0.0
    targets = torch.softmax(teacher_logits.float(), dim=1)
    return -(targets * torch.log_softmax(student_logits.float(), dim=1)).sum(dim=1).mean()


class SketchMemoryBank(torch.nn.Module):
    """DSN's category-specific sketch memory (buffers: saved and restored with the model). Each category keeps up
    to ``size`` sketch features; once full, a new sketch replaces the stored one least similar (cosine) to the
    batch's mean photo feature of its category, if the new one is more similar to that mean."""

    def __init__(self, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("memory", torch.zeros(num_classes, size, dim))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, sketch_features: torch.Tensor, sketch_labels: torch.Tensor, photo_features: torch.Tensor,
               photo_labels: torch.Tensor) -> None:
        """Sketches in batch order: stored while their category has room, else kept if nearer the photo mean."""
        size = self.memory.shape[1]
        sketch_features, photo_features = sketch_features.detach().float(), photo_features.detach().float()
        for row, label in zip(sketch_features, sketch_labels.tolist()):
            count = int(self.filled[label])
            if count < size:
                self.memory[label, count] = row
                self.filled[label] = count + 1
                continue
            same = photo_labels == label
            if not same.any():
                continue
            query = photo_features[same].mean(dim=0, keepdim=True)
            stored = F.cosine_similarity(self.memory[label], query, dim=1)
            furthest = int(stored.argmin())
            if float(F.cosine_similarity(row[None], query, dim=1)) > float(stored[furthest]):
                self.memory[label, furthest] = row

    def centres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each category's mean stored sketch feature, and which categories have any."""
        size = self.memory.shape[1]
        weights = (torch.arange(size, device=self.memory.device)[None, :] < self.filled[:, None]).float()
        sums = (self.memory * weights[..., None]).sum(dim=1)
        present = self.filled > 0
        return sums / self.filled.clamp(min=1)[:, None], present

    def loss(self, photo_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """1 − the mean cosine of each photo's feature to its category's centre (photos of categories with a
        stored sketch; 0 when there are none, as the release's)."""
        centres, present = self.centres()
        known = present[labels]
        if not known.any():
            return photo_features.sum() * 0.0
        cosine = F.cosine_similarity(photo_features[known].float(), centres[labels[known]], dim=1)
        return 1 - cosine.mean()
