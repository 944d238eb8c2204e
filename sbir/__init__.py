"""Domain core of zero-shot sketch-based image retrieval: datasets, manifests, splits, metrics, config, index.

Imports none of torch-side model code, DVC, Prefect, Great Expectations or BentoML. Importing it changes no
global state: entry points apply the offline settings (``sbir.env.apply_offline_defaults``).
"""
