"""Training data in memory, paired sampling and augmentation.

A split is decoded once, in parallel, into uint8 tensors at the training resolution (OpenMoji-ZS at 64 px:
about 55 MB; Sketchy-Ext at 64 px: about 1.6 GB), so a step never waits for disk or a decoder: every epoch is
index arithmetic plus batched tensor augmentation. Benchmarks too large for memory at the chosen resolution
need a streaming loader, which this module does not provide yet.

Pairing: each training step takes a batch of sketches; each sketch is paired with the photo it was drawn from
when the manifest links them (``instance_id``), otherwise with a random photo of its category.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from sbir.images import square_rgb
from sbir.manifest import Manifest


@dataclass
class PairedImages:
    """Sketches and photos of one split as uint8 tensors, with category and instance links."""

    sketches: torch.Tensor  # (Ns, 3, S, S) uint8
    photos: torch.Tensor  # (Np, 3, S, S) uint8
    sketch_labels: torch.Tensor  # (Ns,) int64 category index
    photo_labels: torch.Tensor  # (Np,) int64
    sketch_to_photo: torch.Tensor  # (Ns,) int64 index of the linked photo, -1 if none
    categories: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.categories)


def _load_rgb(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(square_rgb(image, size), dtype=np.uint8).transpose(2, 0, 1)


def _load_all(manifest: Manifest, paths: list[str], size: int, workers: int, desc: str, progress: bool) -> torch.Tensor:
    if not paths:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(tqdm(pool.map(lambda p: _load_rgb(manifest.resolve(p), size), paths), total=len(paths),
                           desc=desc, unit="img", disable=not progress))
    return torch.from_numpy(np.stack(arrays))


def load_paired_images(manifest: Manifest, split: str = "train", image_size: int = 64, workers: int = 4,
                       progress: bool = True) -> PairedImages:
    """Decode one split into memory; categories are indexed in sorted order."""
    sketches = manifest.select(split=split, domain="sketch").reset_index(drop=True)
    photos = manifest.select(split=split, domain="photo").reset_index(drop=True)
    if sketches.empty or photos.empty:
        raise ValueError(f"{manifest.dataset}: split '{split}' needs sketches and photos "
                         f"(has {len(sketches)} and {len(photos)})")
    categories = sorted(set(sketches["category"]) | set(photos["category"]))
    index = {name: i for i, name in enumerate(categories)}
    photo_of_instance = {inst: i for i, inst in enumerate(photos["instance_id"]) if isinstance(inst, str)}
    links = [photo_of_instance.get(inst, -1) if isinstance(inst, str) else -1 for inst in sketches["instance_id"]]
    return PairedImages(
        sketches=_load_all(manifest, sketches["path"].tolist(), image_size, workers, f"{split} sketches", progress),
        photos=_load_all(manifest, photos["path"].tolist(), image_size, workers, f"{split} photos", progress),
        sketch_labels=torch.tensor(sketches["category"].map(index).to_numpy(), dtype=torch.int64),
        photo_labels=torch.tensor(photos["category"].map(index).to_numpy(), dtype=torch.int64),
        sketch_to_photo=torch.tensor(links, dtype=torch.int64),
        categories=categories,
    )


class PairSampler:
    """Seeded epochs of (sketch, photo) index batches; its state is two integers and a generator state.

    Epoch e is a permutation of all sketches drawn from a generator seeded by (seed, e), so a run resumed
    at (epoch, step) sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, data: PairedImages, batch_size: int, seed: int, per_category: int = 1) -> None:
        if batch_size < 2:
            raise ValueError("batch_size must be >= 2 (contrastive losses need negatives)")
        if per_category < 1:
            raise ValueError(f"per_category must be >= 1, got {per_category}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.per_category = per_category
        self.sketches_of_class = [torch.nonzero(data.sketch_labels == c).flatten() for c in range(data.num_classes)]
        self.photos_of_class = [torch.nonzero(data.photo_labels == c).flatten() for c in range(data.num_classes)]
        self.steps_per_epoch = len(data.sketches) // batch_size  # the ragged tail is dropped

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """Every sketch once. With ``per_category`` k > 1, runs of k sketches of one category, in random order:
        a batch then holds several photos of the same categories (hard negatives for the instance term)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.per_category == 1:
            return torch.randperm(len(self.data.sketches), generator=generator)
        runs = []
        for members in self.sketches_of_class:
            shuffled = members[torch.randperm(len(members), generator=generator)]
            runs.extend(shuffled.split(self.per_category))
        return torch.cat([runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()])

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sketch indices, photo indices and whether each pair is a real sketch→photo link (deterministic in
        seed, epoch, step). Unlinked sketches are paired with a random photo of their category."""
        order = self._epoch_order(epoch)
        sketches = order[step * self.batch_size:(step + 1) * self.batch_size]
        photos = self.data.sketch_to_photo[sketches].clone()
        linked = photos >= 0
        unlinked = torch.nonzero(~linked).flatten()
        if unlinked.numel():
            pick = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + step)
            for row in unlinked.tolist():
                pool = self.photos_of_class[int(self.data.sketch_labels[sketches[row]])]
                photos[row] = pool[torch.randint(len(pool), (1,), generator=pick)] if len(pool) else 0
        return sketches, photos, linked


def augment(batch: torch.Tensor, generator: torch.Generator, *, max_rotation: float = 10.0,
            scale: tuple[float, float] = (0.85, 1.1), max_shift: float = 0.08, flip: torch.Tensor | None = None,
            colour: bool = False) -> torch.Tensor:
    """Batched random affine (white fill), optional given flips and photo colour jitter; uint8 → float in [0,1].

    The random draws come from ``generator`` on the CPU whatever the batch's device, so a batch moved to a GPU
    first gets the same transforms as on the CPU, computed there."""
    images = batch.float() / 255.0
    n, device = images.shape[0], images.device
    angle = (torch.rand(n, generator=generator) * 2 - 1) * np.deg2rad(max_rotation)
    zoom = torch.empty(n).uniform_(*scale, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    if flip is not None:
        theta[flip, 0, :2] *= -1
    grid = F.affine_grid(theta.to(device), list(images.shape), align_corners=False)
    # sample 1 - image so that the zero padding of grid_sample becomes white
    images = 1 - F.grid_sample(1 - images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if colour:
        brightness = torch.empty(n, 1, 1, 1).uniform_(0.7, 1.3, generator=generator).to(device)
        saturation = torch.empty(n, 1, 1, 1).uniform_(0.5, 1.5, generator=generator).to(device)
        gray = images.mean(dim=1, keepdim=True)
        images = (gray + (images - gray) * saturation) * brightness
        to_gray = (torch.rand(n, generator=generator) < 0.2).to(device)
        images[to_gray] = images[to_gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return images.clamp_(0, 1)
