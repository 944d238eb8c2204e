"""Zero-shot SBIR retrieval metrics, computed the ways the public codebases compute them.

Embeddings are L2-normalised (``normalize=True``) and ranked by cosine similarity. For unit vectors
``||q - g||^2 = 2 - 2 cos(q, g)``, so ranking by -Euclidean distance (SAKE, DSN, ZSE-SBIR), exp(-d)
(SEM-PCYC) or 1/(1+d) (doodle2search) equals ranking by cosine. A gallery item is relevant to a query when
their category labels are equal. Protocol facts: ``reference/zssbir-benchmarks.md`` section 2 and its Pitfalls.

Per query (hits = relevant items, R of them; prec(k) = hits in the top k / k):

- AP ``sklearn``: non-interpolated, mean of prec at the hits (``sklearn.metrics.average_precision_score``).
- AP ``voc``: interpolated, mean over the hits of max_{j >= k} prec(j) (precision envelope, SAKE/ZSE ``VOCap``).
- ``map_K/sake``: the envelope AP of the top-K list with recall denominator min(K, R) (SAKE/ZSE mAP@200).
- ``map_K/sem_pcyc``: non-interpolated AP of the top-K list divided by the hits inside it, 0 if none
  (SEM-PCYC ``apsak``, ProS/UCDR).
- ``p_K/k``: hits in the top K / K (SAKE, SEM-PCYC); ``p_K/min_k_rel``: hits in the top min(K, R) /
  min(K, R), i.e. the mean relevance of the top min(K, R) (ZSE-SBIR).
- ``fg/acc@K``: the query's own photo (same instance id; the best ranked if there are several) is in the top
  K of the whole gallery (``gallery``) or of the gallery restricted to the query's category (``category``).

Averaging: ``query`` = mean over queries (ZSE, SEM-PCYC, sklearn); ``class`` = mean per category, then over
categories (SAKE/DSN). Queries without any relevant gallery item are excluded from categorical metrics (AP is
undefined, as ZSE's ``nanmean`` does) and counted in ``n_queries_no_relevant``; FG queries whose instance is
not in the (restricted) gallery are excluded and counted in ``fg/n_excluded/<gallery|category>``.

Ties. ``ties="stable"`` (default) ranks by descending score, ties broken by gallery index ascending.
``ties="group"`` evaluates precision at the end of each block of equal scores, exactly as sklearn does, for
every AP-type metric; top-K lists are still cut by the stable order and the cut list is then grouped, which is
what sklearn gives on the truncated list (SEM-PCYC). P@K and FG Acc@K always use the stable order. Exact ties
are common: ~50k float32 scores per query collide, and at QuickDraw scale the two modes differ by up to ~1e-5
(mAP@all) and ~1e-4 (mAP@200) on single queries.

Presets reproduce the metric definitions only, not the codebases' query/gallery subsampling (ZSE without
``--testall``), fp16 scores or gallery construction (Sketch_LVM). sklearn-based presets (``sem_pcyc``,
``sklearn``, ``doodle2search``) group ties; pass ``ties="group"`` to match them exactly on tied scores.

Summary keys (``evaluate_retrieval``): ``<metric>/<variant>/<averaging>`` with metric ``map_all``,
``map_<K>``, ``p_<K>``; variant ``sklearn|voc`` (map_all), ``sake|sem_pcyc`` (map_K), ``k|min_k_rel`` (p_K);
averaging ``query|class``. FG: ``fg/acc@<K>/<gallery|category>``. Protocol presets (``PROTOCOLS``) add
aliases ``preset/<name>/<column>`` for the numbers a paper reports. Counts: ``n_queries``, ``n_gallery``,
``n_classes`` (categories among the queries), ``n_queries_no_relevant``, ``fg/n_queries/*``,
``fg/n_excluded/*``; setting: ``ties``. Per-query values, per-category tables and mean PR / P@K curves:
``compute_retrieval`` -> ``RetrievalResult``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sbir.ranking import CurveSums, LazyScores, chunk_values, l2_normalize, rank_hits, similarity, target_ranks

Ties = Literal["stable", "group"]
SummaryValue = float | int | str | None

#: Paper column -> summary key, per protocol preset.
PROTOCOLS: dict[str, dict[str, str]] = {
    "sake": {"map_all": "map_all/voc/class", "p_100": "p_100/k/class"},
    "zse": {"map_all": "map_all/voc/query", "map_200": "map_200/sake/query",
            "p_100": "p_100/min_k_rel/query", "p_200": "p_200/min_k_rel/query"},
    "sem_pcyc": {"map_all": "map_all/sklearn/query", "map_200": "map_200/sem_pcyc/query",
                 "p_100": "p_100/k/query", "p_200": "p_200/k/query"},
    "sklearn": {"map_all": "map_all/sklearn/query"},
    "doodle2search": {"map_all": "map_all/sklearn/query"},
    # Sketchy-21 style columns (mAP@200 / P@200) only: ranks just the top 200 of each row
    "zse_200": {"map_200": "map_200/sake/query", "p_200": "p_200/min_k_rel/query"},
    "sem_pcyc_200": {"map_200": "map_200/sem_pcyc/query", "p_200": "p_200/k/query"},
    "fine_grained": {f"acc@{k}/{g}": f"fg/acc@{k}/{g}" for g in ("gallery", "category") for k in (1, 5, 10)},
}
#: The columns the papers print for each published benchmark, and the preset each method's paper computes them
#: with (its authors' code; docs/protocols.md has the sources): dataset -> (columns of a preset, method -> preset,
#: the preset of any other model). The report shows them as ``preset/<preset>/<column>`` of metrics.json.
PAPER_COLUMNS: dict[str, tuple[tuple[str, ...], dict[str, str], str]] = {
    "sketchy21": (("map_200", "p_200"), {"zse": "zse_200", "clip_prompt": "sem_pcyc_200"}, "zse_200"),
    "sketchy25": (("map_all", "p_100"), {"dsn": "sake", "zse": "zse"}, "zse"),
    "tuberlin30": (("map_all", "p_100"), {"dsn": "sake", "zse": "zse", "clip_prompt": "sake"}, "zse"),
    "quickdraw30": (("map_all", "p_200"), {"zse": "zse", "clip_prompt": "zse"}, "zse"),
}
#: The headline numbers of an evaluation, name -> summary key: the closing table's columns (``stages/report.py``)
#: and the evaluate stage's one line say the same numbers under the same names.
HEADLINE: dict[str, str] = {"mAP@all": "map_all/sklearn/query", "mAP@all VOC/class": "map_all/voc/class",
                            "P@100": "p_100/k/query", "FG Acc@1": "fg/acc@1/gallery", "FG Acc@5": "fg/acc@5/gallery"}
_ALIASES = {"sem-pcyc": "sem_pcyc", "semp": "sem_pcyc", "pros": "sem_pcyc", "ucdr": "sem_pcyc",
            "dsn": "sake", "fine-grained": "fine_grained", "fg": "fine_grained"}
DEFAULT_RECALL_POINTS: tuple[float, ...] = tuple(i / 20 for i in range(21))
DEFAULT_K_GRID: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def canonical_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    """Preset names normalised (``sem-pcyc`` -> ``sem_pcyc``); ``all`` expands to every preset."""
    out: list[str] = []
    for name in protocols:
        key = _ALIASES.get(name.lower(), name.lower())
        keys = list(PROTOCOLS) if key == "all" else [key]
        if key != "all" and key not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; known: all, {', '.join(PROTOCOLS)}, {', '.join(_ALIASES)}")
        out += [k for k in keys if k not in out]
    return tuple(out)


@dataclass(frozen=True)
class MetricRequest:
    """What to compute: which K lists, whether @all metrics (full ranking) and curves are needed."""

    map_all: bool = True
    map_ks: tuple[int, ...] = (200,)
    p_ks: tuple[int, ...] = (100, 200)
    fg_ks: tuple[int, ...] = ()
    curves: bool = False
    recall_points: tuple[float, ...] = DEFAULT_RECALL_POINTS
    k_grid: tuple[int, ...] = DEFAULT_K_GRID

    def __post_init__(self) -> None:
        ks = (*self.map_ks, *self.p_ks, *self.fg_ks, *self.k_grid)
        if any(int(k) != k or k < 1 for k in ks):
            raise ValueError(f"every K must be an integer >= 1, got {ks}")
        if any(not 0.0 <= r <= 1.0 for r in self.recall_points):
            raise ValueError(f"recall points must lie in [0, 1], got {self.recall_points}")

    @property
    def categorical(self) -> bool:
        return self.map_all or self.curves or bool(self.map_ks) or bool(self.p_ks)

    @property
    def full_ranking(self) -> bool:
        return self.map_all or self.curves


def request_for(protocols: Sequence[str], *, map_ks: Sequence[int] | None = None,
                p_ks: Sequence[int] | None = None, fg_ks: Sequence[int] | None = None,
                has_instances: bool = False, curves: bool = False,
                recall_points: Sequence[float] = DEFAULT_RECALL_POINTS,
                k_grid: Sequence[int] = DEFAULT_K_GRID) -> MetricRequest:
    """The metrics that the presets need, plus any K given explicitly (``all`` = every preset).

    FG metrics are skipped without instance ids (an explicit ``fine_grained`` then raises ValueError).
    """
    names = canonical_protocols(protocols)
    if "fine_grained" in names and not has_instances and "all" not in {p.lower() for p in protocols}:
        raise ValueError("the fine_grained protocol needs query_instances and gallery_instances")
    map_all = False
    found: dict[str, set[int]] = {"map": set(map_ks or ()), "p": set(p_ks or ()), "fg": set(fg_ks or ())}
    for key in (k for n in names for k in PROTOCOLS[n].values()):
        metric = key.split("/")[0]
        if metric == "map_all":
            map_all = True
        elif metric == "fg":
            found["fg"].add(int(key.split("/")[1].removeprefix("acc@")))
        else:
            kind, k = metric.split("_")
            found[kind].add(int(k))
    if not has_instances:
        found["fg"] = set()
    return MetricRequest(map_all=map_all, map_ks=tuple(sorted(found["map"])), p_ks=tuple(sorted(found["p"])),
                         fg_ks=tuple(sorted(found["fg"])), curves=curves,
                         recall_points=tuple(float(r) for r in recall_points),
                         k_grid=tuple(sorted({int(k) for k in k_grid})))


def _jsonable(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


@dataclass(frozen=True)
class RetrievalResult:
    """Per-query metric values of one evaluation, with summaries, per-category tables and mean curves.

    ``per_query``: ``"<metric>/<variant>"`` (e.g. ``map_all/voc``, ``map_200/sake``, ``p_100/k``) -> (n,)
    float64, NaN for queries without relevant gallery items. ``fg_rank``: ``gallery|category`` -> (n,) stable
    1-based rank of the query's own photo, 0 when excluded. Arrays follow the input query order.
    """

    classes: tuple[str, ...]
    query_class: np.ndarray
    n_relevant: np.ndarray
    n_gallery: int
    ties: str
    per_query: dict[str, np.ndarray]
    fg_ks: tuple[int, ...] = ()
    fg_rank: dict[str, np.ndarray] = field(default_factory=dict)
    curves: CurveSums | None = None

    def _class_mean(self, values: np.ndarray) -> float | None:
        means = [m for c in np.unique(self.query_class) if (m := _mean(values[self.query_class == c])) is not None]
        return float(np.mean(means)) if means else None

    def summary(self, protocols: Sequence[str] = ("all",)) -> dict[str, SummaryValue]:
        """Flat JSON-serialisable dict (key scheme in the module docstring), with preset aliases."""
        out: dict[str, SummaryValue] = {
            "n_queries": int(self.query_class.size), "n_gallery": self.n_gallery,
            "n_classes": int(np.unique(self.query_class).size),
            "n_queries_no_relevant": int(np.count_nonzero(self.n_relevant == 0)), "ties": self.ties}
        for key, values in self.per_query.items():
            out[f"{key}/query"] = _mean(values)
            out[f"{key}/class"] = self._class_mean(values)
        for scope, ranks in self.fg_rank.items():
            found = ranks > 0
            out[f"fg/n_queries/{scope}"] = int(np.count_nonzero(found))
            out[f"fg/n_excluded/{scope}"] = int(np.count_nonzero(~found))
            for k in self.fg_ks:
                out[f"fg/acc@{k}/{scope}"] = float(np.mean(ranks[found] <= k)) if found.any() else None
        for name in canonical_protocols(protocols):
            for column, key in PROTOCOLS[name].items():
                if key in out:
                    out[f"preset/{name}/{column}"] = out[key]
        return out

    def per_category(self) -> dict[str, dict[str, SummaryValue]]:
        """Category name -> query count, #relevant gallery items and query-averaged metrics of its queries."""
        table: dict[str, dict[str, SummaryValue]] = {}
        for c in np.unique(self.query_class):
            rows = self.query_class == c
            row: dict[str, SummaryValue] = {"n_queries": int(rows.sum()), "n_relevant": int(self.n_relevant[rows][0])}
            for key, values in self.per_query.items():
                row[key] = _mean(values[rows])
            for scope, ranks in self.fg_rank.items():
                found = rows & (ranks > 0)
                for k in self.fg_ks:
                    row[f"fg/acc@{k}/{scope}"] = float(np.mean(ranks[found] <= k)) if found.any() else None
            table[self.classes[c]] = row
        return table

    def mean_curves(self) -> dict[str, list[float | None] | None]:
        """Mean interpolated precision at fixed recall points and mean P@K over a K grid (needs curves=True)."""
        if self.curves is None:
            raise ValueError("curves were not computed: pass a request with curves=True")
        means = self.curves.means()
        return {key: v.tolist() if key in ("recall", "k") else None if v is None else _jsonable(v)
                for key, v in means.items()}


def _encode(query_values: np.ndarray, gallery_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uniques, codes = np.unique(np.concatenate([query_values, gallery_values]), return_inverse=True)
    codes = codes.ravel().astype(np.int64)
    return uniques, codes[: query_values.size], codes[query_values.size:]


def _instance_targets(q_inst: np.ndarray, g_inst: np.ndarray) -> np.ndarray:
    """(n, D) gallery indices of each query's instance, padded with -1."""
    order = np.argsort(g_inst, kind="stable")
    sorted_inst = g_inst[order]
    lo = np.searchsorted(sorted_inst, q_inst, side="left")
    counts = np.searchsorted(sorted_inst, q_inst, side="right") - lo
    targets = np.full((q_inst.size, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    for d in range(targets.shape[1]):
        has = counts > d
        targets[has, d] = order[lo[has] + d]
    return targets


def _check_inputs(query: np.ndarray, gallery: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray,
                  query_instances: object, gallery_instances: object, ties: str, chunk_size: int) -> None:
    """Raise ValueError naming the first input that cannot be evaluated (query rows are checked per chunk)."""
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"need (n, d) queries and (m, d) gallery, got {query.shape} and {gallery.shape}")
    n, m = query.shape[0], gallery.shape[0]
    if n == 0 or m == 0:
        raise ValueError("need at least one query and one gallery item")
    if q_labels.size != n or g_labels.size != m:
        raise ValueError(f"{q_labels.size} query labels for {n} queries, "
                         f"{g_labels.size} gallery labels for {m} gallery items")
    if (query_instances is None) != (gallery_instances is None):
        raise ValueError("give both query_instances and gallery_instances, or neither")
    if ties not in ("stable", "group"):
        raise ValueError(f"ties must be 'stable' or 'group', got {ties!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if not np.isfinite(gallery).all():
        raise ValueError("gallery embeddings contain NaN or infinity")


def compute_retrieval(query_emb: np.ndarray, gallery_emb: np.ndarray | None, query_labels: Sequence | np.ndarray,
                      gallery_labels: Sequence | np.ndarray, query_instances: Sequence | np.ndarray | None = None,
                      gallery_instances: Sequence | np.ndarray | None = None, *,
                      request: MetricRequest | None = None, ties: Ties = "stable", chunk_size: int = 512,
                      normalize: bool = True, n_threads: int | None = None) -> RetrievalResult:
    """Per-query metrics of sketch queries against a photo gallery, chunked over queries.

    Queries, sorted by category, are processed in chunks of <= ``chunk_size`` (working memory ~ 2 x chunk_size
    x n_gallery float32, independent of the number of queries). ``normalize=False`` ranks raw dot products.
    ``gallery_emb=None``: ``query_emb`` already holds the (n, m) scores, as an array or made chunk by chunk
    (``LazyScores``: e.g. re-scored by a pair scorer).
    """
    req = request or MetricRequest()
    precomputed = gallery_emb is None
    lazy = isinstance(query_emb, LazyScores)
    query = query_emb if lazy else np.asarray(query_emb)  # a memmapped query array stays on disk
    # precomputed scores: an empty-width stand-in gallery carries the gallery size through the checks
    gallery = np.zeros((query.shape[-1], 0), np.float32) if precomputed else np.asarray(gallery_emb)
    q_labels, g_labels = np.asarray(query_labels).ravel(), np.asarray(gallery_labels).ravel()
    _check_inputs(np.zeros((query.shape[0], 0), np.float32) if precomputed else query, gallery, q_labels, g_labels,
                  query_instances, gallery_instances, ties, chunk_size)
    n, m = query.shape[0], gallery.shape[0]
    normalize = normalize and not precomputed
    gallery = l2_normalize(gallery) if normalize else np.ascontiguousarray(gallery, dtype=np.float32)
    names, q_code, g_code = _encode(q_labels, g_labels)
    targets = targets_cat = None
    fg_ks = req.fg_ks if query_instances is not None else ()
    if fg_ks:
        q_inst, g_inst = np.asarray(query_instances).ravel(), np.asarray(gallery_instances).ravel()
        if q_inst.size != n or g_inst.size != m:
            raise ValueError("instance ids must match the numbers of queries and gallery items")
        _, qi, gi = _encode(q_inst, g_inst)
        targets = _instance_targets(qi, gi)
        same_cat = (targets >= 0) & (g_code[np.maximum(targets, 0)] == q_code[:, None])
        targets_cat = np.where(same_cat, targets, -1)

    n_classes = names.size
    n_relevant_by_class = np.bincount(g_code, minlength=n_classes)
    g_order = np.argsort(g_code, kind="stable")
    g_starts = np.concatenate([[0], np.cumsum(n_relevant_by_class)])
    keys = [f"map_all/{v}" for v in ("sklearn", "voc")] if req.full_ranking else []
    keys += [f"map_{k}/{v}" for k in req.map_ks for v in ("sake", "sem_pcyc")]
    keys += [f"p_{k}/{v}" for k in req.p_ks for v in ("k", "min_k_rel")]
    per_query = {key: np.full(n, np.nan) for key in keys}
    fg_rank = {s: np.zeros(n, dtype=np.int64) for s in ("gallery", "category")} if fg_ks else {}
    curves = CurveSums(n_classes, req.recall_points, req.k_grid) if req.curves else None
    kmax = None if req.full_ranking else max((*req.map_ks, *req.p_ks), default=None)
    cut_ks = {*req.map_ks, *req.p_ks, *(req.k_grid if req.curves else ())}  # where P@K-type lists are cut
    threads = n_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    q_order = np.argsort(q_code, kind="stable")  # chunks hold few categories; each runs against its own hits
    if not (req.categorical or fg_ks):
        q_order = q_order[:0]
    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
        for start in range(0, q_order.size, chunk_size):
            rows = q_order[start:start + chunk_size]
            q_chunk = query.rows(rows) if lazy else np.asarray(query[rows], dtype=np.float32)
            if not np.isfinite(q_chunk).all():
                raise ValueError("query embeddings contain NaN or infinity")
            # one GEMM per chunk whatever its categories: a GEMM of few rows is bound by reading the gallery
            scores = q_chunk if precomputed else similarity(l2_normalize(q_chunk) if normalize else q_chunk, gallery)
            chunk_codes = q_code[rows]
            bounds = np.flatnonzero(np.diff(chunk_codes)) + 1
            for a, b in zip([0, *bounds], [*bounds, rows.size]):
                c, group, block = int(chunk_codes[a]), rows[a:b], scores[a:b]
                cols = g_order[g_starts[c]:g_starts[c + 1]]
                if req.categorical and cols.size:
                    # tie-grouped AP needs exact stable positions only where a list is cut: K and min(K, R)
                    exact_ks = None if ties == "stable" else tuple(
                        sorted(cut_ks | {min(k, cols.size) for k in cut_ks}))
                    ranks = rank_hits(block, cols, kmax=kmax, exact_ks=exact_ks, pool=pool, n_blocks=threads)
                    values = chunk_values(ranks, ties=ties, full=req.full_ranking, map_ks=req.map_ks,
                                          p_ks=req.p_ks, keep_envelope=req.curves)
                    for key in keys:
                        per_query[key][group] = values[key]
                    if curves is not None:
                        curves.add(c, values["_env"], ranks.pos)
                if fg_ks:
                    fg_rank["gallery"][group] = target_ranks(block, None, targets[group])
                    fg_rank["category"][group] = target_ranks(block, cols, targets_cat[group])
    return RetrievalResult(classes=tuple(str(x) for x in names), query_class=q_code,
                           n_relevant=n_relevant_by_class[q_code], n_gallery=m, ties=ties, per_query=per_query,
                           fg_ks=fg_ks, fg_rank=fg_rank, curves=curves)


def evaluate_retrieval(query_emb: np.ndarray, gallery_emb: np.ndarray, query_labels: Sequence | np.ndarray,
                       gallery_labels: Sequence | np.ndarray, query_instances: Sequence | np.ndarray | None = None,
                       gallery_instances: Sequence | np.ndarray | None = None, protocols: Sequence[str] = ("all",),
                       *, ties: Ties = "stable", chunk_size: int = 512, map_ks: Sequence[int] | None = None,
                       p_ks: Sequence[int] | None = None, fg_ks: Sequence[int] | None = None,
                       normalize: bool = True, n_threads: int | None = None) -> dict[str, SummaryValue]:
    """Flat JSON-serialisable metrics for the given protocol presets (``all``: every metric and preset).

    Only @all metrics trigger a full ranking of each row; top-K-only protocols sort just the top max(K) values.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    request = request_for(protocols, map_ks=map_ks, p_ks=p_ks, fg_ks=fg_ks,
                          has_instances=query_instances is not None and gallery_instances is not None)
    result = compute_retrieval(query_emb, gallery_emb, query_labels, gallery_labels, query_instances,
                               gallery_instances, request=request, ties=ties, chunk_size=chunk_size,
                               normalize=normalize, n_threads=n_threads)
    return result.summary(protocols)
