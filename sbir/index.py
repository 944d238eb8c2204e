"""Top-k retrieval over L2-normalised embeddings (cosine = inner product): the project's one implementation.

Exact evaluation, approximate serving and their comparison (:func:`recall_at_k`) all go through
:func:`build_index` / :class:`RetrievalIndex`, so they share one ranking convention and one on-disk format.
Kinds: ``exact`` (``faiss.IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``), ``ivf`` (``IndexIVFFlat``, k-means
seeded by ``IndexSpec.seed``), all with the inner-product metric.

Order: descending score, ties by ascending gallery id (``np.argsort(-scores, kind="stable")``). FAISS's heap
returns equal scores in no promised order (in practice largest id first) and picks arbitrarily among ties at
the k-th place, so the exact kind searches deeper than k, doubling the depth until the k-th score is strictly
greater than the last one returned (or the whole gallery is in), then sorts candidates by (-score, id).
Approximate kinds sort their candidates the same way but cannot promise which tied items made their top k;
where they find fewer than k items (FAISS id -1) the row is padded with id -1 and score -inf. Scores are
FAISS's float32 inner products, which may differ from numpy's ``q @ g.T`` in the last bits.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import faiss
import numpy as np

from sbir.io import atomic_write_bytes, atomic_write_json

IndexKind = Literal["exact", "hnsw", "ivf"]
_KINDS: tuple[str, ...] = get_args(IndexKind)
_FORMAT = 1


@dataclass(frozen=True)
class IndexSpec:
    """How to build an index; ``ivf_nlist=None`` means about ``4 * sqrt(n)`` lists (clipped to [1, n])."""

    kind: str = "exact"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"IndexSpec.kind must be one of {list(_KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe", "seed"):
            value, low = getattr(self, name), 0 if name == "seed" else 1
            if (value is not None or name != "ivf_nlist") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ValueError(f"IndexSpec.{name} must be an integer >= {low}, got {value!r}")


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (rows, d) array of finite values, or a ValueError naming ``what``."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows, dim), got shape {x.shape}; "
                         f"wrap a single vector as x[None, :]")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return x


def _sort_candidates(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row re-ordered by (-score, id); FAISS's missing results (id -1) become score -inf, placed last."""
    scores = np.where(ids < 0, np.float32(-np.inf), scores).astype(np.float32)
    order = np.lexsort((ids, -scores))
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1).astype(np.int64)


class RetrievalIndex:
    """A FAISS inner-product index over n float32 vectors of dimension d, with tie-stable top-k search."""

    def __init__(self, index: faiss.Index, spec: IndexSpec) -> None:
        """Wrap an already built (and populated) FAISS index; use :func:`build_index` or :meth:`load`."""
        self._index, self._spec = index, spec

    @property
    def size(self) -> int:
        """Number of gallery vectors (n)."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        """Vector dimension (d)."""
        return int(self._index.d)

    @property
    def spec(self) -> IndexSpec:
        """The spec the index was built with (``ivf_nlist`` resolved to the number actually used)."""
        return self._spec

    def vectors(self) -> np.ndarray:
        """The stored vectors, (size, dim) float32, in gallery id order (as indexed: every kind stores them flat)."""
        return self._index.reconstruct_n(0, self.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (q, k') float32 and ids (q, k') int64, best first, k' = min(k, size); see module docs."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index has dimension {self.dim}")
        n, kp = self.size, min(int(k), self.size)
        if self._spec.kind != "exact":
            return _sort_candidates(*self._index.search(queries, kp))
        out_s, out_i = np.empty((len(queries), kp), np.float32), np.empty((len(queries), kp), np.int64)
        todo, depth = np.arange(len(queries)), min(n, kp + 1)  # one more than k shows a tie at the k-th place
        while todo.size:  # deepen until no tie straddles the k-th place (or the whole gallery is in)
            s, i = self._index.search(queries[todo], depth)
            done = (s[:, kp - 1] > s[:, depth - 1]) | (depth >= n)
            s, i = _sort_candidates(s[done], i[done])
            out_s[todo[done]], out_i[todo[done]] = s[:, :kp], i[:, :kp]
            todo, depth = todo[~done], min(n, 2 * depth)
        return out_s, out_i

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the FAISS index to ``path`` and its JSON sidecar to ``path + '.json'``, each atomically."""
        path = Path(path)
        side = path.with_name(path.name + ".json")
        meta = {"format": _FORMAT, "spec": asdict(self._spec), "dim": self.dim, "size": self.size}
        atomic_write_bytes(path, faiss.serialize_index(self._index).tobytes())
        atomic_write_json(side, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RetrievalIndex:
        """Read an index written by :meth:`save`, checking that its sidecar describes it."""
        path = Path(path)
        side = path.with_name(path.name + ".json")
        try:
            meta = json.loads(side.read_text())
            if meta["format"] != _FORMAT:
                raise ValueError(f"format {meta['format']!r} is not {_FORMAT}")
            spec = IndexSpec(**meta["spec"])
            dim, size = int(meta["dim"]), int(meta["size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"index sidecar {side} is unreadable or malformed: {exc}") from exc
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"cannot read FAISS index file {path}: {exc}") from exc
        expected = {"exact": faiss.IndexFlat, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}[spec.kind]
        found = (type(index).__name__, int(index.d), int(index.ntotal), int(index.metric_type))
        if (not isinstance(index, expected) or found[1:] != (dim, size, faiss.METRIC_INNER_PRODUCT)
                or (spec.kind == "ivf" and index.nlist != spec.ivf_nlist)):
            raise ValueError(f"index sidecar {side} (kind={spec.kind}, dim={dim}, size={size}) does not match "
                             f"index file {path} (type={found[0]}, dim={found[1]}, size={found[2]})")
        _configure(index, spec)
        return cls(index, spec)


def _configure(index: faiss.Index, spec: IndexSpec) -> None:
    """Apply the search-time parameters of ``spec`` (efSearch, nprobe) to a built or loaded index."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = spec.hnsw_ef_search
    elif spec.kind == "ivf":
        index.nprobe = spec.ivf_nprobe


def build_index(vectors: np.ndarray, spec: IndexSpec | None = None) -> RetrievalIndex:
    """Index ``vectors`` (n >= 1, d) of finite values, normally L2-normalised rows, as ``spec`` says."""
    spec = spec or IndexSpec()
    x = _as_matrix(vectors, "vectors")
    n, d = x.shape
    if n < 1 or d < 1:
        raise ValueError(f"vectors must hold at least one row and one column, got shape {x.shape}")
    if spec.kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
    else:
        nlist = spec.ivf_nlist or min(n, max(1, round(4 * math.sqrt(n))))
        if nlist > n:
            raise ValueError(f"IndexSpec.ivf_nlist={nlist} exceeds the number of vectors n={n}")
        spec = replace(spec, ivf_nlist=nlist)
        # FAISS's Python wrapper keeps a reference to the quantizer, so it lives as long as the index
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = spec.seed
        index.cp.min_points_per_centroid = 1  # only silences FAISS's "provide more points" warning
        index.train(x)
    index.add(x)
    _configure(index, spec)
    return RetrievalIndex(index, spec)


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` over ``gallery``: ``build_index(gallery).search(queries, k)``."""
    return build_index(gallery).search(queries, k)


def recall_at_k(approx: RetrievalIndex, exact: RetrievalIndex, queries: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k' (k' = min(k, size)); both index one gallery."""
    if (approx.size, approx.dim) != (exact.size, exact.dim):
        raise ValueError(f"indexes differ: approx has (size, dim)=({approx.size}, {approx.dim}), "
                         f"exact has ({exact.size}, {exact.dim})")
    _, got = approx.search(queries, k)
    _, want = exact.search(queries, k)
    if len(want) == 0:
        raise ValueError("recall_at_k needs at least one query")
    hits = [np.intersect1d(g[g >= 0], w).size for g, w in zip(got, want, strict=True)]
    return float(np.mean(hits) / want.shape[1])
