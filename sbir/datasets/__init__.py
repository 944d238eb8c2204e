"""Dataset registry: the embedded OpenMoji-ZS default, its artwork styles and the published benchmarks' layouts."""

from sbir.datasets.base import Dataset, DatasetError, available, create, register, summarize

# Importing the modules registers their datasets.
from sbir.datasets import openmoji  # noqa: E402,F401  (registration side effect)
from sbir.datasets import benchmarks  # noqa: F401
from sbir.datasets import artwork  # noqa: F401
from sbir.datasets import stroke_sketches  # noqa: F401

__all__ = ["Dataset", "DatasetError", "available", "create", "register", "summarize"]
