"""The one interface every dataset implements, and the registry that names them.

A dataset turns its sources (an installed package, or a user's folder in a published layout) into a
manifest (``sbir.manifest``). Construct one with ``create(name, **params)``, where params come from that
dataset's section of ``params.yaml``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from sbir.config import ConfigError, build
from sbir.manifest import Manifest
from sbir.errors import DataError


class DatasetError(DataError):
    """A dataset source that cannot be read: says which path and what was expected there."""


class Dataset(ABC):
    """A source of sketches and photos with categories, splits and (optionally) sketch→photo links."""

    name: ClassVar[str]

    @abstractmethod
    def prepare(self, out_dir: Path, *, progress: bool = True) -> Manifest:
        """Write ``manifest.parquet`` (and images, if any) into ``out_dir`` and return the manifest."""

    def restyle(self, manifest: Manifest, out_dir: Path, styles: tuple[str, ...], *,
                progress: bool = True) -> pd.DataFrame:
        """Unseen-category sketches redrawn in other styles (the style-shift report); needs vector line art."""
        raise DatasetError(f"{self.name}: its sketches have no vector line art to redraw in other styles; "
                           "the style-shift report is available for openmoji_zs")

    def describe(self) -> dict[str, Any]:
        """Static facts about the dataset (citation, license, split definition) for its dataset card."""
        return {"name": self.name}


_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator: make a dataset constructible by name."""

    def decorate(cls: type[Dataset]) -> type[Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Names of every registered dataset."""
    return sorted(_REGISTRY)


def create(name: str, **params: Any) -> Dataset:
    """Construct a registered dataset from its params section, every key and value type-checked."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset '{name}'; registered: {available()}")
    return build(_REGISTRY[name], params, f"prepare.{name}")


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts a closing note or dataset card reports: images per split × domain, categories per split."""
    counts: dict[str, Any] = {"images": int(len(frame))}
    for split, rows in frame.groupby("split", sort=True):
        counts[str(split)] = {
            "categories": int(rows["category"].nunique()),
            **{str(domain): int(n) for domain, n in rows["domain"].value_counts().sort_index().items()},
        }
    counts["categories"] = int(frame["category"].nunique())
    counts["instances"] = int(frame["instance_id"].dropna().nunique())
    return counts
