"""Category names across datasets: one normalisation, so 'Palm tree', 'palm_tree' and 'palm-tree' are one class.

Used by the benchmark loaders (class lists against folder names) and by cross-dataset evaluation (which test
categories a model trained on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def normalize_category(name: str) -> str:
    """Key that ignores case and space/underscore/hyphen differences ('Palm tree' == 'palm_tree')."""
    return re.sub(r"[\s_\-]+", "_", str(name).strip().lower()).strip("_")


def normalized_set(names: Iterable[str]) -> set[str]:
    return {normalize_category(name) for name in names}
