"""Builders of small test data shared across the test layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sbir.manifest import file_sha256, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_image_dataset(root: Path, categories: dict[str, str], per_category: int = 3, size: int = 48,
                       seed: int = 0) -> Path:
    """A prepared dataset of distinct random images: ``categories`` maps category → split.

    Each category gets ``per_category`` photos (RGB) and as many sketches (L), sketch i linked to photo i.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for category, split in categories.items():
        for index in range(per_category):
            instance = f"{category}-{index}"
            for domain, mode in (("photo", "RGB"), ("sketch", "L")):
                relative = f"images/{domain}/{category}/{instance}.png"
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                channels = 3 if mode == "RGB" else 1
                pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8).squeeze()
                Image.fromarray(pixels, mode=mode).save(target)
                rows.append({"path": relative, "domain": domain, "category": category, "instance_id": instance,
                             "split": split, "content_hash": file_sha256(target)})
    write_manifest(pd.DataFrame(rows), root, dataset="tiny", image_root=".")
    return root
