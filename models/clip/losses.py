"""The losses of CLIP prompt learning (Sain et al., CVPR 2023) on unit embeddings, with the cosine distance
``d(a, b) = 1 − cos(a, b)`` of the authors' code.

- ``category_triplet``: category-level ZS-SBIR. Batch-all triplets: each sketch against every photo of its
  category (positives) and every photo of another category (negatives).
- ``instance_triplet``: fine-grained. A sketch against the photo it was drawn from, negatives the other photos of
  its category in the batch (hard negatives; any other photo where its category has none).
- ``shuffle_triplet``: the patch-shuffling objective. A sketch and its photo shuffled with the same permutation
  ψ of a k×k grid must stay closer than the sketch (ψ) and the photo shuffled with another permutation ψ'.
- ``relative_distance_regulariser``: the relative sketch–photo separation should be uniform across categories.
  Per category c in the batch, δ_c is the mean over its linked sketches of ``d(s, p−) − d(s, p+)`` (p− the
  same-category negatives). The penalty is ``KL(softmax(δ / τ) ‖ uniform)``: zero when every category has the
  same separation, and scale-aware through τ. We chose KL to the uniform distribution (the paper's wording)
  over the variance of δ: the softmax makes the penalty depend on the differences of δ, not on its level,
  which the triplet terms set.

Terms without valid triplets in a batch (e.g. no instance links) are an exact zero that keeps the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, Nb) of ``1 − cos`` between unit rows."""
    return 1 - a @ b.T


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def category_triplet(sketches: torch.Tensor, photos: torch.Tensor, sketch_labels: torch.Tensor,
                     photo_labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over every (sketch, same-category photo, other-category photo) triplet of the batch."""
    distance = cosine_distance(sketches, photos)
    positive = sketch_labels[:, None] == photo_labels[None, :]
    valid = positive[:, :, None] & ~positive[:, None, :]
    if not valid.any():
        return _zero(distance)
    hinge = F.relu(margin + distance[:, :, None] - distance[:, None, :])
    return (hinge * valid).sum() / valid.sum()


def _same_category_negatives(same_instance: torch.Tensor, sketch_labels: torch.Tensor,
                             photo_labels: torch.Tensor) -> torch.Tensor:
    other = ~same_instance
    hard = other & (sketch_labels[:, None] == photo_labels[None, :])
    return hard


def instance_triplet(sketches: torch.Tensor, photos: torch.Tensor, same_instance: torch.Tensor,
                     sketch_labels: torch.Tensor, photo_labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Sketch i (linked to photo i) against photo i, negatives the batch's other photos of its category."""
    distance = cosine_distance(sketches, photos)
    linked = same_instance.diagonal()
    hard = _same_category_negatives(same_instance, sketch_labels, photo_labels)
    negatives = torch.where(hard.any(dim=1, keepdim=True), hard, ~same_instance)
    rows = linked & negatives.any(dim=1)
    if not rows.any():
        return _zero(distance)
    hinge = F.relu(margin + distance.diagonal()[:, None] - distance) * negatives
    per_sketch = hinge.sum(dim=1) / negatives.sum(dim=1).clamp(min=1)
    return per_sketch[rows].mean()


def shuffle_triplet(sketches: torch.Tensor, photos: torch.Tensor, photos_other: torch.Tensor,
                    linked: torch.Tensor, margin: float) -> torch.Tensor:
    """Row i: sketch and photo shuffled with ψ_i (anchor, positive) against the photo shuffled with ψ'_i."""
    if not linked.any():
        return _zero(sketches)
    positive = 1 - (sketches * photos).sum(dim=1)
    negative = 1 - (sketches * photos_other).sum(dim=1)
    return F.relu(margin + positive - negative)[linked].mean()


def relative_distance_regulariser(sketches: torch.Tensor, photos: torch.Tensor, same_instance: torch.Tensor,
                                  sketch_labels: torch.Tensor, photo_labels: torch.Tensor,
                                  temperature: float) -> torch.Tensor:
    """``KL(softmax(δ / τ) ‖ uniform)`` over the batch's categories (see the module docstring)."""
    distance = cosine_distance(sketches, photos)
    negatives = _same_category_negatives(same_instance, sketch_labels, photo_labels)
    valid = same_instance.diagonal() & negatives.any(dim=1)
    if not valid.any():
        return _zero(distance)
    separation = (distance * negatives).sum(dim=1) / negatives.sum(dim=1).clamp(min=1) - distance.diagonal()
    categories, which = torch.unique(sketch_labels[valid], return_inverse=True)
    if len(categories) < 2:
        return _zero(distance)
    sums = torch.zeros(len(categories), dtype=separation.dtype, device=separation.device)
    counts = torch.zeros_like(sums)
    sums = sums.index_add(0, which, separation[valid])
    counts = counts.index_add(0, which, torch.ones_like(separation[valid]))
    share = torch.softmax((sums / counts) / temperature, dim=0)
    return (share * (share * len(share)).log()).sum()


def patch_shuffle(images: torch.Tensor, permutations: torch.Tensor, grid: int) -> torch.Tensor:
    """Each image cut into a ``grid × grid`` layout of cells, cell ``j`` of the output taken from cell
    ``permutations[i, j]`` of image ``i`` (sizes not divisible by ``grid`` keep their border as it is)."""
    n, channels, height, width = images.shape
    cell_h, cell_w = height // grid, width // grid
    core = images[:, :, :cell_h * grid, :cell_w * grid]
    cells = core.reshape(n, channels, grid, cell_h, grid, cell_w).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(n, grid * grid, channels, cell_h, cell_w)
    index = permutations.to(images.device)[:, :, None, None, None].expand_as(cells)
    shuffled = torch.gather(cells, 1, index).reshape(n, grid, grid, channels, cell_h, cell_w)
    out = images.clone()
    out[:, :, :cell_h * grid, :cell_w * grid] = shuffled.permute(0, 3, 1, 4, 2, 5).reshape(
        n, channels, cell_h * grid, cell_w * grid)
    return out


def draw_permutations(count: int, grid: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ψ, ψ'): ``count`` random permutations of the ``grid²`` cells and, row by row, a different one."""
    cells = grid * grid
    first = torch.rand(count, cells, generator=generator).argsort(dim=1)
    second = torch.rand(count, cells, generator=generator).argsort(dim=1)
    same = (first == second).all(dim=1)
    second[same] = first[same].roll(1, dims=1)  # a rotation of a permutation of ≥ 2 cells always differs
    return first, second
