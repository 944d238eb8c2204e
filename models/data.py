"""Training and embedding data read through the manifest: streamed from disk by DataLoader workers, or cached.

- ``TrainSplit``: a split's rows, category labels and sketch→photo links; no pixels.
- ``PairSampler``: seeded (sketch, photo) index batches; step ``s`` is a pure function of (seed, s), so a
  resumed run replays exactly what an uninterrupted one would have drawn.
- ``StepBatches``: a map-style dataset whose item ``s`` is the uint8 images of step ``s`` (this rank's shard).
  ``train_loader`` serves it through DataLoader workers that decode in parallel with a bounded prefetch
  (``workers`` × ``prefetch`` steps in flight), starting at any step. With ``cache`` (``auto`` for sets that fit
  in ``cache_max_mb``), the split is decoded once into uint8 tensors and a step is index arithmetic.
- ``image_loader``: batches of any list of images for embedding, decoded in workers, memory bounded.
Augmentation is batched tensor work on the training device (``augment``), not per image in workers.

Pairing: each sketch is paired with the photo it was drawn from when the manifest links them
(``instance_id``), otherwise with a random photo of its category. With artwork styles (``read_split(...,
styles)``), an item has photos in several styles: a linked sketch is paired with one of them at random, and every
rendering of its item is an instance positive.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from models.interface import Preprocess
from sbir.errors import DataError
from sbir.manifest import Manifest, manifest_fingerprint

log = logging.getLogger(__name__)


@dataclass
class TrainSplit:
    """One split's sketches and photos (paths), category indices (sorted names) and instance links."""

    sketch_paths: list[Path]
    photo_paths: list[Path]
    sketch_labels: torch.Tensor  # (Ns,) int64
    photo_labels: torch.Tensor  # (Np,) int64
    sketch_to_photo: torch.Tensor  # (Ns,) int64 index of the linked photo, -1 if none
    categories: list[str]
    fingerprint: str  # of the whole manifest(s) it was read from (sbir.manifest.manifest_fingerprint)
    sketch_instance: torch.Tensor | None = None  # (Ns,) int64 instance index, -1 if none (None: = the link)
    photo_instance: torch.Tensor | None = None  # (Np,) int64 instance index, -1 if none (None: photo index)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def bytes_at(self, image_size: int) -> int:
        """Memory a uint8 cache of every image at ``image_size`` takes."""
        return (len(self.sketch_paths) + len(self.photo_paths)) * 3 * image_size * image_size


def read_split(manifest: Manifest, split: str = "train", styles: Sequence[Manifest] = ()) -> TrainSplit:
    """A split's rows in manifest order; categories indexed in sorted order. ``styles``: more one-domain sets
    of the same items (other artists' renderings, ``sbir.datasets.artwork``) whose rows of the split join it;
    their images link by instance id, so a sketch's instance may have photos in several styles."""
    manifests = [manifest, *styles]
    frames = [(m, m.select(split=split)) for m in manifests]
    rows = pd.concat([rows.assign(file=[m.resolve(p) for p in rows["path"]]) for m, rows in frames],
                     ignore_index=True)
    sketches = rows[rows["domain"] == "sketch"].reset_index(drop=True)
    photos = rows[rows["domain"] == "photo"].reset_index(drop=True)
    if sketches.empty or photos.empty:
        raise DataError(f"{manifest.dataset}: split '{split}' needs sketches and photos "
                         f"(has {len(sketches)} and {len(photos)})")
    categories = sorted(set(sketches["category"]) | set(photos["category"]))
    index = {name: i for i, name in enumerate(categories)}
    instances = {inst: i for i, inst in enumerate(pd.unique(photos["instance_id"].dropna()))}
    photo_of_instance: dict[str, int] = {}
    for row, inst in enumerate(photos["instance_id"]):  # the first photo of an instance: the dataset's own
        if isinstance(inst, str):
            photo_of_instance.setdefault(inst, row)
    links = [photo_of_instance.get(inst, -1) if isinstance(inst, str) else -1 for inst in sketches["instance_id"]]
    fingerprint = manifest_fingerprint(manifest)
    if styles:
        fingerprint = hashlib.sha256(" ".join(manifest_fingerprint(m) for m in manifests).encode()).hexdigest()
    return TrainSplit(
        sketch_paths=list(sketches["file"]),
        photo_paths=list(photos["file"]),
        sketch_labels=torch.tensor(sketches["category"].map(index).to_numpy(), dtype=torch.int64),
        photo_labels=torch.tensor(photos["category"].map(index).to_numpy(), dtype=torch.int64),
        sketch_to_photo=torch.tensor(links, dtype=torch.int64),
        categories=categories,
        fingerprint=fingerprint,
        sketch_instance=torch.tensor([instances.get(i, -1) if isinstance(i, str) else -1
                                      for i in sketches["instance_id"]], dtype=torch.int64) if styles else None,
        photo_instance=torch.tensor([instances.get(i, -1) if isinstance(i, str) else -1
                                     for i in photos["instance_id"]], dtype=torch.int64) if styles else None,
    )


def load_image(path: Path, preprocess: Preprocess) -> torch.Tensor:
    """Decode one file to the encoder's uint8 input (errors name the file)."""
    try:
        with Image.open(path) as image:
            return preprocess.load(image)
    except (OSError, ValueError) as error:
        raise OSError(f"{path}: cannot be decoded ({error})") from error


class ImageFiles(Dataset):
    """Files → uint8 (3, S, S) tensors, one per item (decoded in DataLoader workers)."""

    def __init__(self, paths: Sequence[Path], preprocess: Preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.preprocess)


def image_loader(paths: Sequence[Path], preprocess: Preprocess, batch_size: int, workers: int = 2,
                 prefetch: int = 2) -> DataLoader:
    """Batches of uint8 images in order; at most ``workers × prefetch`` batches decoded ahead."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return DataLoader(ImageFiles(paths, preprocess), batch_size=batch_size, shuffle=False, num_workers=workers,
                      prefetch_factor=prefetch if workers else None)


def decode_all(paths: Sequence[Path], preprocess: Preprocess, workers: int = 2) -> torch.Tensor:
    """Every image into one uint8 tensor (the in-memory cache), decoded by loader workers."""
    if not paths:
        size = preprocess.image_size
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.cat(list(image_loader(paths, preprocess, batch_size=256, workers=workers)))


class PairSampler:
    """Seeded epochs of (sketch, photo) index batches.

    Epoch e is a permutation of all sketches drawn from a generator seeded by (seed, e), so a run resumed at
    (epoch, step) sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, data: TrainSplit, batch_size: int, seed: int, per_category: int = 1,
                 category_pairs: float = 0.0) -> None:
        if batch_size < 2:
            raise ValueError("batch_size must be >= 2 (contrastive losses need negatives)")
        if per_category < 1:
            raise ValueError(f"per_category must be >= 1, got {per_category}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.per_category = per_category
        self.category_pairs = category_pairs
        self.sketches_of_class = [torch.nonzero(data.sketch_labels == c).flatten() for c in range(data.num_classes)]
        self.photos_of_class = [torch.nonzero(data.photo_labels == c).flatten() for c in range(data.num_classes)]
        self.photos_of_instance = None  # with artwork styles: an item's photos in every style
        if data.photo_instance is not None:
            groups: dict[int, list[int]] = {}
            for row, instance in enumerate(data.photo_instance.tolist()):
                groups.setdefault(instance, []).append(row)
            self.photos_of_instance = {k: torch.tensor(v) for k, v in groups.items() if k >= 0 and len(v) > 1}
        self.steps_per_epoch = len(data.sketch_paths) // batch_size  # the ragged tail is dropped
        self._epoch_order = lru_cache(maxsize=2)(self._draw_epoch_order)

    def _draw_epoch_order(self, epoch: int) -> torch.Tensor:
        """Every sketch once. With ``per_category`` k > 1, runs of k sketches of one category, in random order:
        a batch then holds several photos of the same categories (hard negatives for the instance term)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.per_category == 1:
            return torch.randperm(len(self.data.sketch_paths), generator=generator)
        runs = []
        for members in self.sketches_of_class:
            shuffled = members[torch.randperm(len(members), generator=generator)]
            runs.extend(shuffled.split(self.per_category))
        return torch.cat([runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()])

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sketch indices, photo indices and whether each pair is a real sketch→photo link (deterministic in
        seed, epoch, step). Unlinked sketches, and a ``category_pairs`` share of the linked ones, are paired with a
        random photo of their category, drawn from all of its photos: the extended photos no sketch was drawn
        from (Sketchy-Extended's ``ext_*``) take part, as in the papers' category-level training."""
        order = self._epoch_order(epoch)
        sketches = order[step * self.batch_size:(step + 1) * self.batch_size]
        links = self.data.sketch_to_photo[sketches]
        photos = links.clone()
        if self.photos_of_instance:  # an item drawn in several photo styles: one of them, at random
            styled = torch.Generator().manual_seed(self.seed * 3571 + epoch * 7727 + step)
            for row, instance in enumerate(self.data.sketch_instance[sketches].tolist()):
                pool = self.photos_of_instance.get(instance)
                if pool is not None and links[row] >= 0:
                    photos[row] = pool[torch.randint(len(pool), (1,), generator=styled)]
        redraw = links < 0
        if self.category_pairs > 0:
            switch = torch.Generator().manual_seed(self.seed * 6007 + epoch * 15485863 + step)
            redraw |= torch.rand(len(sketches), generator=switch) < self.category_pairs
        if redraw.any():
            pick = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + step)
            for row in torch.nonzero(redraw).flatten().tolist():
                pool = self.photos_of_class[int(self.data.sketch_labels[sketches[row]])]
                photos[row] = pool[torch.randint(len(pool), (1,), generator=pick)] if len(pool) else 0
        if self.data.photo_instance is not None:  # linked: a rendering of the very item the sketch shows
            instance = self.data.sketch_instance[sketches]
            return sketches, photos, (instance >= 0) & (self.data.photo_instance[photos] == instance)
        return sketches, photos, (links >= 0) & (photos == links)


@dataclass
class StepBatch:
    """What one training step of one rank gets: uint8 images, labels, links."""

    step: int
    sketches: torch.Tensor
    photos: torch.Tensor
    sketch_labels: torch.Tensor
    photo_labels: torch.Tensor
    photo_index: torch.Tensor  # the photos' identity: split index, or instance index with styles (same = same item)
    linked: torch.Tensor  # the pair is a real sketch→photo link
    sketch_link: torch.Tensor  # the identity of the item each sketch shows, as photo_index (-1: none)


class StepBatches(Dataset):
    """Item ``s`` = global step ``s``'s shard for one rank: a pure function of (seed, s, rank)."""

    def __init__(self, sampler: PairSampler, preprocess: dict[str, Preprocess], rank: int = 0, world_size: int = 1,
                 cache: dict[str, torch.Tensor] | None = None) -> None:
        self.sampler = sampler
        self.preprocess = preprocess
        self.rank, self.world_size = rank, world_size
        self.cache = cache

    def __len__(self) -> int:
        return 1 << 62  # indexed by global step; the loader's sampler bounds it

    def _images(self, domain: str, indices: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[domain][indices]
        paths = self.sampler.data.sketch_paths if domain == "sketch" else self.sampler.data.photo_paths
        return torch.stack([load_image(paths[i], self.preprocess[domain]) for i in indices.tolist()])

    def __getitem__(self, global_step: int) -> StepBatch:
        epoch, step = divmod(global_step, self.sampler.steps_per_epoch)
        sketch_idx, photo_idx, linked = self.sampler.batch(epoch, step)
        n = len(sketch_idx)
        shard = slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)
        sketch_idx, photo_idx, linked = sketch_idx[shard], photo_idx[shard], linked[shard]
        data = self.sampler.data
        photo_key, sketch_key = photo_idx, data.sketch_to_photo[sketch_idx]
        if data.photo_instance is not None:  # every rendering of a sketch's item is its instance positive
            photo_key, sketch_key = data.photo_instance[photo_idx], data.sketch_instance[sketch_idx]
        return StepBatch(global_step, self._images("sketch", sketch_idx), self._images("photo", photo_idx),
                         data.sketch_labels[sketch_idx], data.photo_labels[photo_idx], photo_key, linked,
                         sketch_key)


def use_cache(data: TrainSplit, image_size: int, cache: str, cache_max_mb: int) -> bool:
    """``memory``/``none`` decide; ``auto`` caches sets whose uint8 images fit in ``cache_max_mb``."""
    if cache not in ("auto", "memory", "none"):
        raise ValueError(f"cache must be 'auto', 'memory' or 'none', got {cache!r}")
    return cache == "memory" or (cache == "auto" and data.bytes_at(image_size) <= cache_max_mb * 2**20)


def train_loader(batches: StepBatches, start_step: int, total_steps: int, workers: int,
                 prefetch: int = 2) -> DataLoader:
    """Steps ``start_step .. total_steps - 1`` in order; cached batches need no workers."""
    workers = 0 if batches.cache is not None else workers
    return DataLoader(batches, batch_size=None, sampler=range(start_step, total_steps), num_workers=workers,
                      prefetch_factor=prefetch if workers else None, persistent_workers=False,
                      collate_fn=None)


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


def style_jitter(sketches: torch.Tensor, generator: torch.Generator, probability: float) -> torch.Tensor:
    """Sketch styles of the wild, batched: each float sketch in [0, 1] (dark ink on white) is, with
    ``probability``, drawn thicker (marker), fainter (pencil, scan), or as a small bitmap blown up — one of
    them, chosen by ``generator`` (CPU draws, so the result does not depend on the batch's device)."""
    n, _, size, _ = sketches.shape
    chosen = torch.rand(n, generator=generator) < probability
    kind = torch.randint(3, (n,), generator=generator)
    fade = torch.empty(n).uniform_(0.25, 0.7, generator=generator)
    shrink = torch.empty(n).uniform_(0.25, 0.6, generator=generator)
    out = sketches.clone()
    for row in torch.nonzero(chosen).flatten().tolist():
        image = sketches[row:row + 1]
        if kind[row] == 0:  # marker: ink spreads by a pixel
            out[row] = -F.max_pool2d(-image, 3, stride=1, padding=1)[0]
        elif kind[row] == 1:  # faint pencil or scan: ink lightened towards the paper
            out[row] = (1 - (1 - image) * float(fade[row]))[0]
        else:  # tiny bitmap: down to a fraction of the size, back up blocky
            small = max(8, int(size * float(shrink[row])))
            down = F.interpolate(image, size=(small, small), mode="area")
            out[row] = F.interpolate(down, size=(size, size), mode="nearest")[0]
    return out


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _grey(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (YIQ's Y), (N, 1, H, W)."""
    return (images * _RGB_TO_YIQ[0].to(images.device)[None, :, None, None]).sum(1, True)


def _hue_rotation(shift: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) RGB matrices turning hue by ``shift`` of a full turn: a rotation of the chroma plane in YIQ."""
    angle = shift * 2 * np.pi
    cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                            torch.stack([zero, sin, cos], 1)], 1)
    return torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ


def contrastive_view(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One SimCLR-style view of each uint8 image, as DSN's contrastive transform: a horizontal flip (p 0.5), colour
    jitter (p 0.8: brightness, contrast and saturation factors in [0.6, 1.4] and a hue turn in [-0.1, 0.1], in that
    order; the hue turn rotates the YIQ chroma plane) and grayscale (p 0.2); float in [0, 1], batched. Draws come
    from ``generator`` on the CPU."""
    images = batch.float() / 255.0
    n, device = images.shape[0], images.device
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    jitter = (torch.rand(n, generator=generator) < 0.8).to(device)[:, None, None, None]
    factors = torch.empty(n, 3).uniform_(0.6, 1.4, generator=generator).to(device)[..., None, None, None]
    hue = torch.empty(n).uniform_(-0.1, 0.1, generator=generator)
    gray = (torch.rand(n, generator=generator) < 0.2).to(device)[:, None, None, None]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    jittered = (images * factors[:, 0]).clamp(0, 1)
    mean = _grey(jittered).mean(dim=(2, 3), keepdim=True)
    jittered = ((jittered - mean) * factors[:, 1] + mean).clamp(0, 1)
    luma = _grey(jittered)
    jittered = ((jittered - luma) * factors[:, 2] + luma).clamp(0, 1)
    jittered = torch.einsum("nij,njhw->nihw", _hue_rotation(hue).to(device), jittered).clamp(0, 1)
    images = torch.where(jitter, jittered, images)
    return torch.where(gray, _grey(images).expand(-1, 3, -1, -1), images)
