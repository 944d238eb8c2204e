"""How retrieval holds up off the dataset's own styles: the reports of ``evaluate`` beside in-distribution.

- ``style_shift``: sketch queries in other styles against the dataset's own unseen photo gallery — the unseen
  sketches redrawn (``restyle``: thin pencil, marker, faint scan, tiny bitmap, off-centre) and the artwork sketch
  sets of ``evaluate.cross_sketches`` (other artists' line art of the same emoji: Fluent high contrast, EmojiOne
  monotone, Symbola). Per set: mAP@all and FG Acc@1 and their ratio to the dataset's own sketches of the same
  items (1.0 = no loss).
- ``cross_gallery``: the dataset's unseen sketches against each photo-only gallery of ``evaluate.cross_galleries``
  (the same emoji pictured by other artists: Twemoji, Fluent flat, Fluent 3D), every protocol variant, with the
  ratio of mAP@all and FG Acc@1 to in-distribution.
- ``mixed_gallery``: the same sketches against one gallery of every photo style at once (the dataset's photos and
  each cross gallery's); the right item is any rendering of the sketch's emoji (FG: the best ranked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sbir.embeddings import Embeddings, EmbeddingsError
from sbir.fine_grained import fine_grained_on_paired_photos, instance_ids, keep_rows
from sbir.metrics import compute_retrieval, request_for

STYLE_KEYS = {"map_all": "map_all/sklearn/query", "fg_acc@1": "fg/acc@1/gallery"}


def _kept(vectors: np.ndarray, rows: pd.DataFrame, drop: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    keep = keep_rows(rows, drop)
    return vectors[keep], rows[keep].reset_index(drop=True)


def query_numbers(sketch_emb: np.ndarray, sketches: pd.DataFrame, photo_emb: np.ndarray, photos: pd.DataFrame,
                  ties: str) -> dict[str, Any]:
    """mAP@all (and FG Acc@1 on the paired photos, where instance ids link) of queries against a gallery."""
    q_inst, g_inst = instance_ids(sketches, "q"), instance_ids(photos, "g")
    fg = q_inst is not None and g_inst is not None
    labels = sketches["category"].to_numpy(str), photos["category"].to_numpy(str)
    result = compute_retrieval(sketch_emb, photo_emb, *labels, q_inst if fg else None, g_inst if fg else None,
                               request=request_for(["all"], has_instances=fg), ties=ties)
    summary = result.summary(["all"])
    if fg:  # the same fine-grained gallery as the in-style numbers: paired photos only
        fine_grained_on_paired_photos(sketch_emb, photo_emb, labels, q_inst, g_inst, ties, summary)
    return {name: summary[key] for name, key in STYLE_KEYS.items() if key in summary}


def _with_ratios(numbers: dict[str, Any], reference: dict[str, Any], n_queries: int) -> dict[str, float]:
    row: dict[str, float] = {"n_queries": n_queries}
    for name in STYLE_KEYS:
        if name in numbers:
            row[name] = numbers[name]
            base = reference.get(name)
            row[f"{name}_ratio"] = numbers[name] / base if base else float("nan")
    return row


def style_shift(embeddings: Embeddings, photo_emb: np.ndarray, photos: pd.DataFrame, drop: set[str],
                in_style: dict[str, Any], ties: str,
                sketch_sets: dict[str, Embeddings] | None = None) -> dict[str, dict[str, float]]:
    """Each restyled set, then each artwork sketch set, of unseen sketches against the same gallery. A restyled
    set redraws every unseen sketch, so its ratio is to the in-style numbers; an artwork set holds the emoji its
    artist drew, so its ratio is to the dataset's own sketches of those emoji."""
    report = {}
    reference = {name: in_style[key] for name, key in STYLE_KEYS.items() if key in in_style}
    for style in embeddings.styles:
        sketch_emb, sketches = _kept(*embeddings.select(split="test_unseen", domain="sketch", style=style), drop)
        report[style] = _with_ratios(query_numbers(sketch_emb, sketches, photo_emb, photos, ties), reference,
                                     len(sketches))
    own_emb, own = _kept(*embeddings.select(split="test_unseen", domain="sketch"), drop)
    for name, sketch_set in (sketch_sets or {}).items():
        sketch_emb, sketches = _kept(*sketch_set.select(split="test_unseen", domain="sketch"), drop)
        if sketches.empty:
            raise EmbeddingsError(f"sketch set {name}: no test_unseen sketches (a photo gallery? list it under "
                                  "evaluate.cross_galleries)")
        same = own["instance_id"].isin(set(sketches["instance_id"])).to_numpy()
        own_numbers = query_numbers(own_emb[same], own[same].reset_index(drop=True), photo_emb, photos, ties)
        row = _with_ratios(query_numbers(sketch_emb, sketches, photo_emb, photos, ties), own_numbers,
                           len(sketches))
        report[name] = row | {f"own_{key}": value for key, value in own_numbers.items()}
    return report


def gallery_photos(name: str, gallery: Embeddings, drop: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """A photo gallery's test_unseen photos, minus dropped categories; an error if it holds none."""
    photo_emb, photos = _kept(*gallery.select(split="test_unseen", domain="photo"), drop)
    if photos.empty:
        raise EmbeddingsError(f"gallery {name}: no test_unseen photos to retrieve from (a sketch set? list it "
                              "under evaluate.cross_sketches)")
    return photo_emb, photos


def cross_gallery(sketch_emb: np.ndarray, sketches: pd.DataFrame, galleries: dict[str, Embeddings], drop: set[str],
                  protocols: list[str], ties: str,
                  in_distribution: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The unseen sketches against each photo-only gallery's test_unseen photos (the same items drawn by other
    artists): category-level metrics (same category = hit) and, where instance ids are shared, fine-grained Acc@K
    (the sketch's own item = hit). Sketches of an item the gallery lacks count in ``fg/n_excluded/*``. With
    ``in_distribution`` (the zero-shot summary), mAP@all and FG Acc@1 also as ratios to it."""
    report: dict[str, dict[str, Any]] = {}
    q_inst = instance_ids(sketches, "q")
    for name, gallery in galleries.items():
        photo_emb, photos = gallery_photos(name, gallery, drop)
        g_inst = instance_ids(photos, "g")
        fg = q_inst is not None and g_inst is not None
        result = compute_retrieval(sketch_emb, photo_emb, sketches["category"].to_numpy(str),
                                   photos["category"].to_numpy(str), q_inst if fg else None, g_inst if fg else None,
                                   request=request_for(protocols, has_instances=fg), ties=ties)
        summary = result.summary(protocols)
        for short, key in STYLE_KEYS.items():
            if in_distribution and isinstance(summary.get(key), float) and in_distribution.get(key):
                summary[f"{short}_ratio"] = summary[key] / in_distribution[key]
        report[name] = {"gallery_dataset": gallery.meta.get("dataset", name), **summary}
    return report


def mixed_gallery(sketch_emb: np.ndarray, sketches: pd.DataFrame, photo_emb: np.ndarray, photos: pd.DataFrame,
                  galleries: dict[str, Embeddings], drop: set[str], ties: str) -> dict[str, Any]:
    """The unseen sketches against every photo style at once: category mAP@all (same category = hit) and FG Acc@K
    where the hit is any rendering of the sketch's own item (the best ranked one counts)."""
    vectors, rows, styles = [photo_emb], [photos], {"": len(photos)}
    for name, gallery in galleries.items():
        emb, found = gallery_photos(name, gallery, drop)
        vectors.append(emb)
        rows.append(found)
        styles[name] = len(found)
    gallery_rows = pd.concat(rows, ignore_index=True)
    q_inst, g_inst = instance_ids(sketches, "q"), instance_ids(gallery_rows, "g")
    fg = q_inst is not None and g_inst is not None
    result = compute_retrieval(sketch_emb, np.concatenate(vectors), sketches["category"].to_numpy(str),
                               gallery_rows["category"].to_numpy(str), q_inst if fg else None,
                               g_inst if fg else None, request=request_for(["all"], has_instances=fg), ties=ties)
    summary = result.summary(["all"])
    keys = ("n_queries", "n_gallery", "map_all/sklearn/query", "p_100/k/query", "fg/acc@1/gallery",
            "fg/acc@5/gallery", "fg/acc@10/gallery")
    return {"photos_per_style": {name or "own": count for name, count in styles.items()},
            **{key: summary[key] for key in keys if key in summary}}
