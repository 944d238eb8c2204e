"""Chunked similarity and exact rank positions of relevant gallery items (the engine of ``sbir.metrics``).

Every categorical retrieval metric (AP, mAP@K, P@K) of a query only needs the 1-based positions of its R
relevant gallery items ("hits") in the ranked list: position = 1 + the number of items scoring higher (+ tied
items of smaller gallery index). No row is argsorted (m log m with index bookkeeping, the slow part of the
public evaluation scripts). For @all metrics a row's scores are bucketed into ~m equal-width value buckets:
a histogram gives the count above each hit's bucket, and only the few items sharing a bucket with a hit are
sorted to count exactly inside it (``_bucket_counts``). For top-K metrics only the top ``kmax`` values are
partitioned out and sorted. When an irrelevant item has exactly the same score as a hit (frequent: ~50k
float32 scores of one row collide dozens of times), the index tie-break is resolved by counting the equal
scores before the hit's index in that row.

numpy, not torch: on the 2-core CPU this was measured on, numpy's float32 GEMM ran ~2x faster than torch.mm,
and torch.sort (stable) cost ~2.8 ms per 54k-score row against ~0.35 ms for the bucket counts.

Ranking order ("stable"): descending score, ties broken by gallery index ascending, i.e. the order of
``np.argsort(-scores, kind="stable")``. The tie-grouped counts (``rel_ge``/``all_ge``) give, for each hit,
the precision at the end of its block of equal scores, as ``sklearn.metrics.average_precision_score`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class LazyScores:
    """(queries, gallery) scores made a block of query rows at a time (``rows``), never held whole: the score
    matrices of a pair scorer, which at QuickDraw-30's 92,291 × 54,151 would take 19 GB as float32. The metrics
    engine asks for one chunk of rows at a time (``sbir.metrics.compute_retrieval``)."""

    shape: tuple[int, int]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """float32 (len(index), gallery) scores of the queries at ``index``."""
        raise NotImplementedError

    def columns(self, keep: np.ndarray) -> LazyScores:
        """The same scores against the gallery items where ``keep`` (a boolean mask) holds."""
        return _ColumnSubset(self, np.asarray(keep, dtype=bool))


class _ColumnSubset(LazyScores):
    def __init__(self, source: LazyScores, keep: np.ndarray) -> None:
        self.source, self.keep = source, keep
        self.shape = (source.shape[0], int(keep.sum()))

    def rows(self, index: np.ndarray) -> np.ndarray:
        return self.source.rows(index)[:, self.keep]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def similarity(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """float32 scores ``query @ gallery.T`` (cosine for unit rows), always computed as a GEMM of >= 2 rows.

    OpenBLAS evaluates a one-row product with GEMV, whose rounding differs from GEMM's; padding a single row to
    two keeps a row's scores bitwise independent of how queries are chunked (observed with OpenBLAS 0.3.31).
    """
    if query.shape[0] == 1:
        return (np.concatenate([query, query]) @ gallery.T)[:1]
    return query @ gallery.T


@dataclass(frozen=True)
class HitRanks:
    """Ranks of the R relevant items of q queries, hits ordered by the stable ranking (columns t = 0..R-1).

    ``pos``: stable 1-based position in the ranked gallery (strictly increasing along a row); ``rel_ge`` and
    ``all_ge``: numbers of relevant and of all gallery items scoring >= the hit (end of its tie block). In
    top-K mode, hits below the computed top list get ``pos = all_ge = beyond`` (> every K asked).
    """

    pos: np.ndarray
    rel_ge: np.ndarray
    all_ge: np.ndarray
    beyond: int


def _run_blocks(pool: ThreadPoolExecutor | None, fn: Callable[[int, int], None], n_rows: int,
                n_blocks: int) -> None:
    """Call ``fn(start, stop)`` on contiguous row blocks, in parallel when a pool is given."""
    n_blocks = max(1, min(n_blocks, n_rows))
    edges = np.linspace(0, n_rows, n_blocks + 1).astype(int)
    spans = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    if pool is None or len(spans) == 1:
        for a, b in spans:
            fn(a, b)
    else:
        for future in [pool.submit(fn, a, b) for a, b in spans]:
            future.result()


def _run_bounds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted ascending: index of the first and one past the last element equal to each element."""
    q, n = values.shape
    idx = np.broadcast_to(np.arange(n), (q, n))
    starts = np.ones((q, n), dtype=bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    ends = np.ones((q, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    return first, last + 1


def _bucket_counts(row: np.ndarray, keys: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of items of ``row`` scoring > and == each of the ascending ``keys`` (values taken from the row).

    Equal-width buckets are a monotone function of the score, so items in higher buckets score higher; only
    the items in the buckets of the keys (a few % of the row) are sorted, to count exactly within a bucket.
    """
    lo = row.min()
    span = float(row.max()) - float(lo)
    ratio = n_buckets / span if 0 < span < np.inf else 0.0
    scale = np.float32(ratio if ratio < 1e30 else 0.0)  # 0: all scores equal (or a degenerate range)

    def bucket_of(values: np.ndarray) -> np.ndarray:  # the same float32 arithmetic for every caller
        if scale == 0:
            return np.zeros(values.size, dtype=np.int32)
        return np.minimum(((values - lo) * scale).astype(np.int32), n_buckets - 1)

    bucket, key_bucket = bucket_of(row), bucket_of(keys)
    above = row.size - np.cumsum(np.bincount(bucket, minlength=n_buckets))[key_bucket]
    in_key_bucket = np.zeros(n_buckets, dtype=bool)
    in_key_bucket[key_bucket] = True
    cand = np.sort(np.compress(in_key_bucket.take(bucket), row))
    cand_bucket = bucket_of(cand)  # non-decreasing, as cand is sorted
    right = np.searchsorted(cand, keys, side="right")
    greater = above + np.searchsorted(cand_bucket, key_bucket, side="right") - right
    return greater, right - np.searchsorted(cand, keys, side="left")


def rank_hits(scores: np.ndarray, rel_cols: np.ndarray, *, kmax: int | None = None,
              exact_ks: tuple[int, ...] | None = None, pool: ThreadPoolExecutor | None = None,
              n_blocks: int = 1) -> HitRanks:
    """Positions of the items ``rel_cols`` (the same sorted relevant set for every row) in each row's ranking.

    ``kmax``: if given and < m, only the top ``kmax`` values of a row are sorted (top-K mode) and hits below
    them are marked ``beyond``. ``exact_ks``: None when every stable position must be exact (stable-order AP);
    otherwise positions need only decide membership in the top K for these K (tie-grouped AP), so ties are
    resolved only where they straddle such a K.
    """
    q, m = scores.shape
    n_rel = rel_cols.size
    rel_asc = np.sort(scores[:, rel_cols], axis=1)
    full = kmax is None or kmax >= m
    greater = np.empty((q, n_rel), dtype=np.int64)
    equal = np.empty((q, n_rel), dtype=np.int64)
    cut = np.empty(q, dtype=np.float32)  # the K-th largest value of each row in top-K mode

    def count(a: int, b: int) -> None:
        if full:
            n_buckets = min(32768, max(16, m))  # ~1-2 items per bucket at QuickDraw scale
            for i in range(a, b):
                greater[i], equal[i] = _bucket_counts(scores[i], rel_asc[i], n_buckets)
            return
        top = np.partition(scores[a:b], m - kmax, axis=1)[:, m - kmax:]
        top.sort(axis=1)
        cut[a:b] = top[:, 0]
        for i in range(a, b):
            right = np.searchsorted(top[i - a], rel_asc[i], side="right")
            greater[i] = kmax - right  # exact: every item above the K-th value is in the list
            equal[i] = right - np.searchsorted(top[i - a], rel_asc[i], side="left")

    _run_blocks(pool, count, q, n_blocks)
    beyond = np.zeros((q, n_rel), dtype=bool)
    if not full:
        beyond = rel_asc < cut[:, None]
        boundary = rel_asc == cut[:, None]  # ties with the K-th value may continue outside the list: count all
        for i in np.flatnonzero(boundary.any(axis=1)):
            equal[i, boundary[i]] = np.count_nonzero(scores[i] == cut[i])
    rel_first, rel_end = _run_bounds(rel_asc)
    rel_ge = n_rel - rel_first
    all_ge = greater + equal
    pos = greater + rel_end - np.arange(n_rel)  # = greater + 1 + rank among tied hits (index order)

    # Where an irrelevant item shares a hit's score, the stable position needs gallery indices: position =
    # greater + 1 + #items with that score and a smaller index. float32 scores of ~50k items collide often.
    ambiguous = (equal > rel_end - rel_first) & ~beyond
    if exact_ks is not None:
        straddles = np.zeros_like(ambiguous)
        for k in exact_ks:
            straddles |= (greater < k) & (all_ge > k)
        ambiguous &= straddles
    amb_rows = np.flatnonzero(ambiguous.any(axis=1))

    def resolve(a: int, b: int) -> None:
        for i in amb_rows[a:b]:
            row, row_rel = scores[i], scores[i, rel_cols]
            for first in np.unique(rel_first[i, ambiguous[i]]):
                value = rel_asc[i, first]
                tied = rel_cols[row_rel == value]  # ascending gallery indices = stable order of these hits
                before = np.searchsorted(np.flatnonzero(row == value), tied)  # equal scores at smaller indices
                pos[i, first:rel_end[i, first]] = (greater[i, first] + 1 + before)[::-1]

    _run_blocks(pool, resolve, amb_rows.size, n_blocks)
    sentinel = m + 1
    pos[beyond] = sentinel
    all_ge[beyond] = sentinel
    return HitRanks(pos=pos[:, ::-1].copy(), rel_ge=rel_ge[:, ::-1].copy(), all_ge=all_ge[:, ::-1].copy(),
                    beyond=sentinel)


def target_ranks(scores: np.ndarray, cols: np.ndarray | None, targets: np.ndarray) -> np.ndarray:
    """Stable 1-based rank of each row's best target item among the gallery columns ``cols`` (None = all).

    ``targets``: (q, D) gallery indices padded with -1 (an instance may have several photos); the best target is
    the one ranked first (highest score, then lowest index). Rows without a target get rank 0.
    """
    valid = targets >= 0
    safe = np.where(valid, targets, 0)
    tscore = np.where(valid, np.take_along_axis(scores, safe, axis=1), -np.inf)
    best_score = tscore.max(axis=1, initial=-np.inf)[:, None]
    best_idx = np.where(valid & (tscore == best_score), safe, np.iinfo(np.int64).max).min(axis=1)
    sub = scores if cols is None else scores[:, cols]
    ranks = 1 + np.count_nonzero(sub > best_score, axis=1)
    equal = sub == best_score
    for i in np.flatnonzero(np.count_nonzero(equal, axis=1) > 1):  # ties with the target: lower index first
        n_before = best_idx[i] if cols is None else np.searchsorted(cols, best_idx[i])
        ranks[i] += np.count_nonzero(equal[i, :n_before])
    ranks[~valid.any(axis=1)] = 0
    return ranks


def _revcummax(x: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(x[:, ::-1], axis=1)[:, ::-1]


def chunk_values(ranks: HitRanks, *, ties: str, full: bool, map_ks: Sequence[int], p_ks: Sequence[int],
                 keep_envelope: bool = False) -> dict[str, np.ndarray]:
    """Per-query categorical metrics (definitions in ``sbir.metrics``) of a chunk sharing one relevant set.

    Stable order: the precision at a hit is t / pos; tie-grouped: rel_ge / all_ge, the precision at the end of
    the hit's block of equal scores. ``full`` adds the @all APs (and the envelope ``_env`` if kept).
    """
    pos = ranks.pos
    n_rel = pos.shape[1]
    if ties == "stable":
        num = np.broadcast_to(np.arange(1, n_rel + 1, dtype=np.float64), pos.shape)
        den = pos.astype(np.float64)
    else:
        num, den = ranks.rel_ge.astype(np.float64), ranks.all_ge.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    if full:
        prec = num / den
        out["map_all/sklearn"] = prec.mean(axis=1)
        env = _revcummax(prec)
        out["map_all/voc"] = env.mean(axis=1)
        if keep_envelope:
            out["_env"] = env
    for k in map_ks:
        inside = pos <= k
        hits = np.count_nonzero(inside, axis=1)
        # in the cut list a hit's block ends at min(all_ge, K); a block cut at K holds all the hits of the list
        prec_k = np.where(den <= k, num, hits[:, None]) / np.minimum(den, k)
        prec_k = np.where(inside, prec_k, 0.0)
        out[f"map_{k}/sake"] = _revcummax(prec_k).sum(axis=1) / min(k, n_rel)
        out[f"map_{k}/sem_pcyc"] = np.where(hits > 0, prec_k.sum(axis=1) / np.maximum(hits, 1), 0.0)
    for k in p_ks:
        out[f"p_{k}/k"] = np.count_nonzero(pos <= k, axis=1) / k
        k_eff = min(k, n_rel)  # ZSE: mean relevance of the top min(K, R)
        out[f"p_{k}/min_k_rel"] = np.count_nonzero(pos <= k_eff, axis=1) / k_eff
    return out


def hits_at(pos: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """(q, len(ks)) numbers of hits with position <= k; rows of ``pos`` are increasing."""
    q, n_rel = pos.shape
    rows = np.arange(q, dtype=np.int64)[:, None]
    stride = int(max(pos.max(initial=0), ks.max(initial=0))) + 1  # shifts make the rows one sorted array
    found = np.searchsorted((pos + rows * stride).ravel(), (ks[None, :] + rows * stride).ravel(), side="right")
    return found.reshape(q, -1) - rows * n_rel


class CurveSums:
    """Per-class sums of the interpolated PR curve and of P@K over a K grid (memory independent of n)."""

    def __init__(self, n_classes: int, recall: Sequence[float], k_grid: Sequence[int]) -> None:
        self.recall = np.asarray(recall, dtype=np.float64)
        self.k_grid = np.asarray(k_grid, dtype=np.int64)
        self.pr_sum = np.zeros((n_classes, self.recall.size))
        self.pk_sum = np.zeros((n_classes, self.k_grid.size))
        self.pk_min_sum = np.zeros((n_classes, self.k_grid.size))
        self.count = np.zeros(n_classes, dtype=np.int64)

    def add(self, cls: int, env: np.ndarray, pos: np.ndarray) -> None:
        n_rel = pos.shape[1]
        # interpolated precision at recall r = envelope at hit ceil(r R); the tolerance keeps 0.56 * 25 at 14
        idx = np.maximum(np.ceil(self.recall * n_rel - 1e-9).astype(np.int64), 1) - 1
        self.pr_sum[cls] += env[:, idx].sum(axis=0)
        self.pk_sum[cls] += (hits_at(pos, self.k_grid) / self.k_grid).sum(axis=0)
        k_eff = np.minimum(self.k_grid, n_rel)
        self.pk_min_sum[cls] += (hits_at(pos, k_eff) / k_eff).sum(axis=0)
        self.count[cls] += pos.shape[0]

    def means(self) -> dict[str, np.ndarray | None]:
        """Query-averaged (``<curve>/query``) and class-averaged (``<curve>/class``) curves."""
        used = self.count > 0
        out: dict[str, np.ndarray | None] = {"recall": self.recall, "k": self.k_grid}
        for name, sums in (("precision", self.pr_sum), ("p_at_k/k", self.pk_sum),
                           ("p_at_k/min_k_rel", self.pk_min_sum)):
            out[f"{name}/query"] = sums.sum(axis=0) / self.count.sum() if used.any() else None
            out[f"{name}/class"] = (sums[used] / self.count[used, None]).mean(axis=0) if used.any() else None
        return out
