"""Domain core of zero-shot sketch-based image retrieval: datasets, manifests, splits, metrics, config.

Imports none of torch-side model code, DVC, Prefect, Great Expectations or BentoML.
"""

from sbir.env import apply_offline_defaults

apply_offline_defaults()

__all__ = ["apply_offline_defaults"]
