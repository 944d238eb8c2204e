"""Rows of an evaluation: which categories stay, instance ids as the metrics take them, and the fine-grained
gallery the papers use (paired photos only). Shared by the evaluate stage and its cross-style reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sbir.categories import normalize_category
from sbir.metrics import compute_retrieval, request_for
from sbir.ranking import LazyScores


def keep_rows(rows: pd.DataFrame, drop: set[str]) -> np.ndarray:
    """Rows whose (normalised) category is not in ``drop`` (categories a model trained on)."""
    return (~rows["category"].map(normalize_category).isin(drop)).to_numpy()


def instance_ids(rows: pd.DataFrame, prefix: str) -> np.ndarray | None:
    """Instance ids; a missing id gets a sentinel unique to its row, so it matches nothing."""
    ids = rows["instance_id"]
    if ids.isna().all():
        return None
    sentinels = pd.Series([f"\0{prefix}{i}" for i in range(len(ids))], index=ids.index)
    return ids.fillna(sentinels).to_numpy(dtype=str)


def paired_photos(query_instances: np.ndarray, gallery_instances: np.ndarray) -> np.ndarray:
    """The fine-grained gallery as the papers build it: photos some query sketch was drawn from, each once (the
    first of duplicate copies); unpaired photos (Sketchy-Extended's ``ext_*``) stay in the category gallery only."""
    wanted = set(query_instances.tolist())
    seen: set[str] = set()
    keep = np.zeros(len(gallery_instances), dtype=bool)
    for row, instance in enumerate(gallery_instances.tolist()):
        if instance in wanted and instance not in seen:
            keep[row] = True
            seen.add(instance)
    return keep


def fine_grained_on_paired_photos(queries: np.ndarray | LazyScores, photo_emb: np.ndarray | None,
                                  labels: tuple[np.ndarray, ...], q_inst: np.ndarray, g_inst: np.ndarray, ties: str,
                                  summary: dict[str, Any]) -> None:
    """Replace ``summary``'s fine-grained numbers by those against the paired photos only, where the gallery
    holds others (unpaired or duplicate photos); ``fg/n_gallery`` says how many photos the FG gallery held.
    ``queries``: the sketch embeddings, or (``photo_emb`` None) (queries, gallery) scores, dense or lazy."""
    keep = paired_photos(q_inst, g_inst)
    summary["fg/n_gallery"] = int(keep.sum())
    if keep.all():
        return
    if photo_emb is not None:
        query, gallery = queries, photo_emb[keep]
    else:
        query, gallery = (queries.columns(keep) if isinstance(queries, LazyScores) else queries[:, keep]), None
    fine = compute_retrieval(query, gallery, labels[0], labels[1][keep], q_inst, g_inst[keep],
                             request=request_for(["fine_grained"], has_instances=True), ties=ties)
    summary.update({key: value for key, value in fine.summary(["fine_grained"]).items()
                    if key.startswith(("fg/", "preset/fine_grained/"))})
