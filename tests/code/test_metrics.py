"""Retrieval metrics (sbir.metrics) against sklearn, a brute-force pure-Python reference and hand-worked cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from sbir.metrics import MetricRequest, compute_retrieval, evaluate_retrieval, request_for
from sbir.ranking import l2_normalize, similarity

# ---------------------------------------------------------------- brute-force reference (pure Python, per query)


def _blocks(order: list[int], scores: list[float], grouped: bool) -> list[list[int]]:
    """Consecutive items of ``order``, grouped into runs of equal score when ``grouped``."""
    blocks: list[list[int]] = []
    for j in order:
        if grouped and blocks and scores[blocks[-1][-1]] == scores[j]:
            blocks[-1].append(j)
        else:
            blocks.append([j])
    return blocks


def _curve(order: list[int], scores: list[float], rel: list[bool], grouped: bool) -> list[tuple[int, float]]:
    """(hits in block, precision at the end of the block) for each block of the list."""
    out, tp, seen = [], 0, 0
    for block in _blocks(order, scores, grouped):
        hits = sum(rel[j] for j in block)
        tp, seen = tp + hits, seen + len(block)
        out.append((hits, tp / seen))
    return out


def _voc_ap(points: list[tuple[int, float]], denominator: int) -> float:
    """VOCap written as SAKE describes it: recall/precision arrays, sentinels, precision envelope, area."""
    rec, prec, tp = [0.0], [0.0], 0
    for hits, p in points:
        tp += hits
        rec.append(tp / denominator)
        prec.append(p)
    rec.append(1.0)
    prec.append(0.0)
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])


def reference_query(scores: list[float], rel: list[bool], ties: str, map_ks, p_ks) -> dict[str, float]:
    """Every categorical metric of one query by definition (stable order = score desc, index asc)."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    n_rel, grouped = sum(rel), ties == "group"
    full = _curve(order, scores, rel, grouped)
    out = {"map_all/sklearn": sum(h * p for h, p in full) / n_rel, "map_all/voc": _voc_ap(full, n_rel)}
    for k in map_ks:
        top = _curve(order[:k], scores, rel, grouped)
        hits = sum(h for h, _ in top)
        out[f"map_{k}/sake"] = _voc_ap(top, min(k, n_rel))
        out[f"map_{k}/sem_pcyc"] = sum(h * p for h, p in top) / hits if hits else 0.0
    for k in p_ks:
        out[f"p_{k}/k"] = sum(rel[j] for j in order[:k]) / k
        k_eff = min(k, n_rel)
        out[f"p_{k}/min_k_rel"] = sum(rel[j] for j in order[:k_eff]) / k_eff
    return out


def reference_fg_rank(scores: list[float], match: list[bool], allowed: list[bool]) -> int:
    """1-based stable rank of the first matching item among the allowed ones; 0 if none is allowed."""
    order = [j for j in sorted(range(len(scores)), key=lambda j: (-scores[j], j)) if allowed[j]]
    return next((r + 1 for r, j in enumerate(order) if match[j]), 0)


def reference_interp_precision(scores: list[float], rel: list[bool], recall: float) -> float:
    """Max stable-order precision over ranks whose recall is >= ``recall``."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    tp, best, n_rel = 0, 0.0, sum(rel)
    for rank, j in enumerate(order, 1):
        tp += rel[j]
        if tp / n_rel >= recall - 1e-12:
            best = max(best, tp / rank)
    return best


# ---------------------------------------------------------------- data


def make_problem(seed: int, n: int, m: int, d: int, levels: int, n_classes: int):
    """Small integer embeddings (exact dot products, many ties; levels 0 = all scores tied), labels with a
    class absent from the gallery, and instance ids of which some are missing from the gallery."""
    rng = np.random.default_rng(seed)
    query = rng.integers(-levels, levels + 1, (n, d)).astype(np.float32)
    gallery = rng.integers(-levels, levels + 1, (m, d)).astype(np.float32)
    q_labels = rng.integers(0, n_classes + 1, n)  # label n_classes never occurs in the gallery
    g_labels = rng.integers(0, n_classes, m)
    return query, gallery, q_labels, g_labels, rng.integers(0, m + 3, n), rng.integers(0, m, m)


MAP_KS, P_KS, FG_KS = (1, 3, 10), (1, 2, 5, 10), (1, 3)


def check_against_reference(problem, ties: str, chunk: int, threads: int) -> None:
    """Full and top-K paths of compute_retrieval equal the brute-force reference on every query."""
    query, gallery, q_labels, g_labels, q_inst, g_inst = problem
    full = MetricRequest(map_all=True, map_ks=MAP_KS, p_ks=P_KS, fg_ks=FG_KS)
    topk = MetricRequest(map_all=False, map_ks=MAP_KS, p_ks=P_KS)
    kwargs = dict(ties=ties, chunk_size=chunk, normalize=False, n_threads=threads)
    result = compute_retrieval(query, gallery, q_labels, g_labels, q_inst, g_inst, request=full, **kwargs)
    top = compute_retrieval(query, gallery, q_labels, g_labels, request=topk, **kwargs)
    assert set(top.per_query) == {k for k in result.per_query if not k.startswith("map_all")}
    scores = (query.astype(np.float64) @ gallery.T.astype(np.float64)).tolist()
    for i, row in enumerate(scores):
        rel = [bool(g == q_labels[i]) for g in g_labels]
        match = [bool(g == q_inst[i]) for g in g_inst]
        assert result.fg_rank["gallery"][i] == reference_fg_rank(row, match, [True] * len(row))
        assert result.fg_rank["category"][i] == reference_fg_rank(row, match, rel)
        if not any(rel):
            assert all(math.isnan(v[i]) for v in result.per_query.values())
            continue
        for key, value in reference_query(row, rel, ties, MAP_KS, P_KS).items():
            assert result.per_query[key][i] == pytest.approx(value, abs=1e-12), key
            if not key.startswith("map_all"):
                assert top.per_query[key][i] == pytest.approx(value, abs=1e-12), ("top-K path", key)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), m=st.integers(1, 60), d=st.integers(1, 4),
       levels=st.integers(0, 3), n_classes=st.integers(1, 4), ties=st.sampled_from(["stable", "group"]),
       chunk=st.integers(1, 9), threads=st.sampled_from([1, 2]))
def test_matches_brute_force_with_ties(seed, n, m, d, levels, n_classes, ties, chunk, threads) -> None:
    check_against_reference(make_problem(seed, n, m, d, levels, n_classes), ties, chunk, threads)


@pytest.mark.parametrize("ties", ["stable", "group"])
def test_matches_brute_force_on_a_sweep_of_heavily_tied_problems(ties) -> None:
    """Deterministic companion of the property test: 300 tiny problems with few distinct scores."""
    for seed in range(300):
        rng = np.random.default_rng(seed)
        problem = make_problem(seed, int(rng.integers(1, 8)), int(rng.integers(1, 25)), int(rng.integers(1, 3)),
                               int(rng.integers(0, 2)), int(rng.integers(1, 3)))
        check_against_reference(problem, ties, chunk=int(rng.integers(1, 4)), threads=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.integers(1, 4), m=st.integers(2, 400))
def test_grouped_ap_equals_sklearn(seed, levels, m) -> None:
    rng = np.random.default_rng(seed)
    query = rng.integers(-levels, levels + 1, (6, 3)).astype(np.float32)
    gallery = rng.integers(-levels, levels + 1, (m, 3)).astype(np.float32)
    q_labels, g_labels = rng.integers(0, 3, 6), rng.integers(0, 3, m)
    result = compute_retrieval(query, gallery, q_labels, g_labels, ties="group", normalize=False, chunk_size=4)
    scores = query @ gallery.T
    for i in range(6):
        y = g_labels == q_labels[i]
        if y.any():
            expected = average_precision_score(y, scores[i])
            assert abs(result.per_query["map_all/sklearn"][i] - expected) < 1e-12


def test_sklearn_equality_on_a_large_tied_gallery() -> None:
    """Thousands of ties per score level: 5 query x 20,000 gallery items with 9 distinct scores."""
    rng = np.random.default_rng(3)
    gallery = rng.integers(-4, 5, (20_000, 1)).astype(np.float32)
    query = np.array([[1.0], [-1.0], [2.0], [1.0], [-3.0]], dtype=np.float32)
    q_labels, g_labels = np.array([0, 1, 2, 1, 0]), rng.integers(0, 3, 20_000)
    for ties in ("group", "stable"):
        result = compute_retrieval(query, gallery, q_labels, g_labels, ties=ties, normalize=False)
        for i in range(5):
            y, s = g_labels == q_labels[i], (query[i] @ gallery.T)
            order = np.argsort(-s, kind="stable")
            hits = y[order]
            stable_ap = (np.cumsum(hits) / np.arange(1, s.size + 1))[hits].mean()
            expected = average_precision_score(y, s) if ties == "group" else stable_ap
            assert abs(result.per_query["map_all/sklearn"][i] - expected) < 1e-12
    # with this many ties the two orders must disagree (guards against ties being ignored)
    grouped = compute_retrieval(query, gallery, q_labels, g_labels, ties="group", normalize=False)
    assert abs(grouped.per_query["map_all/sklearn"] - result.per_query["map_all/sklearn"]).max() > 1e-4


# ---------------------------------------------------------------- hand-worked cases


def _one_query(scores, labels, **kwargs):
    """A 1-d problem: query [1] and gallery items [s], so the scores are exactly ``scores``."""
    gallery = np.asarray(scores, dtype=np.float32)[:, None]
    return compute_retrieval(np.ones((1, 1), np.float32), gallery, ["A"], labels, normalize=False, **kwargs)


def test_hand_case_interpolation_and_cutoffs() -> None:
    # ranked relevance 0 1 0 1 1 (R = 3); precision at ranks 1..5: 0, 1/2, 1/3, 2/4, 3/5
    # sklearn AP = (1/2 + 2/4 + 3/5) / 3 = 1.6/3; VOC envelope at the hits = 3/5, 3/5, 3/5 -> VOC AP = 0.6
    # top-3 = 0 1 0: sake = env(1/2)/min(3,3) = 1/6, sem_pcyc = (1/2)/1 hit = 1/2
    # top-4 = 0 1 0 1: sake = (1/2 + 1/2)/3 = 1/3, sem_pcyc = (1/2 + 1/2)/2 = 1/2; top-1 = 0: both 0
    # P@2: 1/2 (both); P@4: /K = 2/4, min(K,R)=3 -> top-3 holds 1 hit -> 1/3
    request = MetricRequest(map_ks=(1, 3, 4), p_ks=(2, 4))
    r = _one_query([0.9, 0.8, 0.7, 0.6, 0.5], ["B", "A", "B", "A", "A"], request=request).per_query
    expected = {"map_all/sklearn": 1.6 / 3, "map_all/voc": 0.6, "map_3/sake": 1 / 6, "map_3/sem_pcyc": 0.5,
                "map_4/sake": 1 / 3, "map_4/sem_pcyc": 0.5, "map_1/sake": 0.0, "map_1/sem_pcyc": 0.0,
                "p_2/k": 0.5, "p_2/min_k_rel": 0.5, "p_4/k": 0.5, "p_4/min_k_rel": 1 / 3}
    for key, value in expected.items():
        assert r[key][0] == pytest.approx(value, abs=1e-12), key


def test_hand_case_ties_stable_vs_group() -> None:
    # scores 0.9 | 0.5 0.5 0.5 | 0.1 with labels A | B A B | A (R = 3)
    # stable order (index breaks ties): relevance 1 0 1 0 1 -> sklearn AP = (1 + 2/3 + 3/5)/3 = 34/45;
    #   VOC: envelope at the hits 1, max(2/3, 2/4, 3/5) = 2/3, 3/5 -> also 34/45
    # grouped: block ends at ranks 1, 4, 5 with precision 1, 2/4, 3/5, one hit each -> AP = 2.1/3 = 0.7;
    #   VOC envelope over the block ends 1, 0.6, 0.6 -> 2.2/3
    # top-4 (stable cut = items 0..3, relevance 1 0 1 0): stable sem_pcyc = (1 + 2/3)/2, sake = (1 + 2/3)/3;
    #   grouped in the cut list: blocks {0}, {1,2,3} with precision 1, 2/4 -> sem_pcyc 0.75, sake 1.5/3
    request = MetricRequest(map_ks=(4,), p_ks=(2,))
    scores, labels = [0.9, 0.5, 0.5, 0.5, 0.1], ["A", "B", "A", "B", "A"]
    stable = _one_query(scores, labels, request=request, ties="stable").per_query
    group = _one_query(scores, labels, request=request, ties="group").per_query
    assert stable["map_all/sklearn"][0] == pytest.approx(34 / 45, abs=1e-12)
    assert stable["map_all/voc"][0] == pytest.approx(34 / 45, abs=1e-12)
    assert stable["map_4/sem_pcyc"][0] == pytest.approx(5 / 6, abs=1e-12)
    assert stable["map_4/sake"][0] == pytest.approx(5 / 9, abs=1e-12)
    assert group["map_all/sklearn"][0] == pytest.approx(0.7, abs=1e-12)
    assert group["map_all/sklearn"][0] == pytest.approx(average_precision_score(
        [lab == "A" for lab in labels], scores), abs=1e-12)
    assert group["map_all/voc"][0] == pytest.approx(2.2 / 3, abs=1e-12)
    assert group["map_4/sem_pcyc"][0] == pytest.approx(0.75, abs=1e-12)
    assert group["map_4/sake"][0] == pytest.approx(0.5, abs=1e-12)
    # P@K uses the stable cut in both modes: top-2 = A B -> 1/2
    assert stable["p_2/k"][0] == group["p_2/k"][0] == 0.5
    # ZSE's P@10 with R = 4 cuts at 4, inside the tied block {B, A, B} at 0.5: stable top-4 = A A A B -> 3/4
    for ties in ("stable", "group"):
        r = _one_query([0.9, 0.9, 0.9, 0.5, 0.5, 0.5], list("AAABAB"), ties=ties,
                       request=MetricRequest(p_ks=(10,))).per_query
        assert r["p_10/min_k_rel"][0] == 0.75 and r["p_10/k"][0] == 0.4


def test_class_average_differs_from_query_average_when_imbalanced() -> None:
    # gallery: one A item at +1, one B item at -1. Three A queries at +1 rank their A item first (AP 1);
    # one B query at +1 ranks its B item second (AP 1/2). Query mean (1+1+1+0.5)/4 = 0.875, class mean 0.75.
    query = np.ones((4, 1), np.float32)
    out = evaluate_retrieval(query, np.array([[1.0], [-1.0]], np.float32), ["A", "A", "A", "B"], ["A", "B"],
                             protocols=["sake", "zse"], normalize=False)
    assert out["map_all/sklearn/query"] == pytest.approx(0.875)
    assert out["map_all/sklearn/class"] == pytest.approx(0.75)
    assert out["preset/sake/map_all"] == out["map_all/voc/class"] == pytest.approx(0.75)
    assert out["preset/zse/map_all"] == out["map_all/voc/query"] == pytest.approx(0.875)


def test_fine_grained_gallery_vs_category() -> None:
    # gallery (score, category, instance): (0.9, B, p) (0.8, B, q) (0.7, A, x) (0.6, A, y) (0.5, A, x2)
    # query 0: category A, instance x -> rank 3 in the whole gallery, rank 1 within category A
    # query 1: category A, instance y -> rank 4 overall, 2 within A; query 2: instance z is absent -> excluded
    gallery = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]], np.float32)
    out = evaluate_retrieval(np.ones((3, 1), np.float32), gallery, ["A", "A", "A"], list("BBAAA"),
                             ["x", "y", "z"], ["p", "q", "x", "y", "x2"], protocols=["fine-grained"],
                             normalize=False)
    assert out["fg/n_queries/gallery"] == 2 and out["fg/n_excluded/gallery"] == 1
    assert out["fg/acc@1/gallery"] == 0.0 and out["fg/acc@5/gallery"] == 1.0
    assert out["fg/acc@1/category"] == 0.5 and out["fg/acc@5/category"] == 1.0
    assert out["preset/fine_grained/acc@1/category"] == 0.5
    assert "map_all/voc/query" not in out  # FG alone needs no ranking of categories


def test_curves_match_definitions() -> None:
    rng = np.random.default_rng(5)
    query, gallery = rng.integers(-2, 3, (12, 3)).astype(np.float32), rng.integers(-2, 3, (30, 3)).astype(np.float32)
    q_labels, g_labels = rng.integers(0, 3, 12), np.arange(30) % 3  # R = 10: 0.3 * 10 and 0.7 * 10 round up
    recall, grid = (0.0, 0.3, 0.5, 0.7, 1.0), (1, 5, 30)
    request = MetricRequest(curves=True, p_ks=(5,), recall_points=recall, k_grid=grid)
    result = compute_retrieval(query, gallery, q_labels, g_labels, request=request, normalize=False, chunk_size=5)
    curves = result.mean_curves()
    scores = (query @ gallery.T).tolist()
    expected = [np.mean([reference_interp_precision(scores[i], list(g_labels == q_labels[i]), r)
                         for i in range(12)]) for r in recall]
    assert curves["precision/query"] == pytest.approx(expected, abs=1e-12)
    assert curves["p_at_k/k/query"][1] == pytest.approx(np.mean(result.per_query["p_5/k"]), abs=1e-12)
    assert curves["p_at_k/min_k_rel/query"][1] == pytest.approx(np.mean(result.per_query["p_5/min_k_rel"]))
    assert curves["precision/query"][0] == pytest.approx(max(curves["precision/query"]))
    # hand case, R = 25, relevance 1 x14, 0, 1 x11: recall 0.56 (0.56 * 25 = 14.000000000000002 in floats) is
    # reached at hit 14 (precision 1); later precisions are 15/16 ... 25/26, so the interpolated precision is
    # 1 at recall 0.56 and 25/26 at 0.6; P@15 = 14/15
    labels = ["A"] * 14 + ["B"] + ["A"] * 11
    one = _one_query(list(np.linspace(1, 0, 26)), labels,
                     request=MetricRequest(curves=True, recall_points=(0.56, 0.6), k_grid=(15,))).mean_curves()
    assert one["precision/query"] == pytest.approx([1.0, 25 / 26], abs=1e-12)
    assert one["p_at_k/k/query"] == [14 / 15]


# ---------------------------------------------------------------- invariances, outputs, errors


def test_chunk_size_and_thread_invariance_on_float_embeddings() -> None:
    rng = np.random.default_rng(11)
    query, gallery = rng.standard_normal((37, 16)), rng.standard_normal((500, 16))
    q_labels, g_labels = rng.integers(0, 4, 37), rng.integers(0, 4, 500)
    base = compute_retrieval(query, gallery, q_labels, g_labels, chunk_size=1000, n_threads=1)
    for chunk, threads in ((1, 2), (3, 1), (8, 2)):
        other = compute_retrieval(query, gallery, q_labels, g_labels, chunk_size=chunk, n_threads=threads)
        for key, values in base.per_query.items():
            np.testing.assert_array_equal(values, other.per_query[key], err_msg=key)


def test_similarity_rows_do_not_depend_on_chunking() -> None:
    # OpenBLAS rounds a one-row product (GEMV) differently from GEMM; similarity() must hide that
    rng = np.random.default_rng(8)
    query = l2_normalize(rng.standard_normal((5, 512)))
    gallery = l2_normalize(rng.standard_normal((3000, 512)))
    together = similarity(query, gallery)
    for i in range(5):
        np.testing.assert_array_equal(similarity(query[i:i + 1], gallery)[0], together[i])


def test_summary_is_json_and_presets_point_at_generic_keys() -> None:
    rng = np.random.default_rng(2)
    out = evaluate_retrieval(rng.standard_normal((30, 8)), rng.standard_normal((90, 8)), rng.integers(0, 3, 30),
                             rng.integers(0, 3, 90), rng.integers(0, 90, 30), np.arange(90))
    json.dumps(out, allow_nan=False)
    for name, column, key in (("sake", "p_100", "p_100/k/class"), ("zse", "p_200", "p_200/min_k_rel/query"),
                              ("sem_pcyc", "map_200", "map_200/sem_pcyc/query"),
                              ("fine_grained", "acc@10/gallery", "fg/acc@10/gallery")):
        assert out[f"preset/{name}/{column}"] == out[key]
    assert out["ties"] == "stable" and out["n_queries"] == 30 and out["n_classes"] == 3


def test_top_k_protocol_skips_map_all_and_per_category_table() -> None:
    rng = np.random.default_rng(4)
    query, gallery = rng.standard_normal((20, 8)), rng.standard_normal((300, 8))
    q_labels, g_labels = np.array(["cat", "dog"] * 10), np.array(["cat", "dog", "emu"] * 100)
    out = evaluate_retrieval(query, gallery, q_labels, g_labels, protocols=["zse_200"])
    assert "map_all/voc/query" not in out and "preset/zse_200/map_200" in out
    result = compute_retrieval(query, gallery, q_labels, g_labels, request=request_for(["all"]))
    table = result.per_category()
    assert set(table) == {"cat", "dog"} and table["cat"]["n_relevant"] == 100
    assert np.mean([table[c]["map_all/voc"] for c in table]) == pytest.approx(
        result.summary()["map_all/voc/class"])


@pytest.mark.parametrize("bad", [
    dict(protocols=["nope"]), dict(protocols=["fine_grained"]), dict(ties="random"), dict(chunk_size=0),
    dict(p_ks=[0]), dict(query_emb=np.full((2, 3), np.nan)), dict(query_labels=[0])])
def test_invalid_inputs_raise(bad) -> None:
    args = dict(query_emb=np.ones((2, 3)), gallery_emb=np.ones((4, 3)), query_labels=[0, 1],
                gallery_labels=[0, 1, 0, 1])
    args.update(bad)
    with pytest.raises(ValueError):
        evaluate_retrieval(**args)


def test_library_imports_no_pipeline_frameworks() -> None:
    code = ("import sys, sbir.metrics, sbir.ranking; "
            "print([m for m in ('dvc', 'prefect', 'great_expectations', 'bentoml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_scores_made_per_chunk_of_rows_give_the_dense_results_without_the_dense_matrix() -> None:
    """``LazyScores`` (a pair scorer's scores at QuickDraw size): the engine asks for chunks of rows only, and
    gets the numbers of the dense matrix; a column subset (the paired-photo FG gallery) likewise."""
    from models.pair_ranking import RerankedScores
    from sbir.ranking import LazyScores

    rng = np.random.default_rng(3)
    queries, gallery = l2_normalize(rng.normal(size=(40, 8))), l2_normalize(rng.normal(size=(30, 8)))
    q_labels, g_labels = rng.integers(0, 4, 40), rng.integers(0, 4, 30)
    q_inst, g_inst = rng.integers(0, 30, 40), np.arange(30)
    top = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :5]
    pairs = rng.normal(size=top.shape).astype(np.float32)
    dense = similarity(queries, gallery)
    for q in range(40):  # the definition: the top-k lifted above the row's maximum, in pair-score order
        dense[q, top[q]] = dense[q].max() + 1 + pairs[q] - pairs[q].min()
    lazy = RerankedScores(queries, gallery, top, pairs)
    asked: list[int] = []

    class Counting(LazyScores):
        shape = lazy.shape

        def rows(self, index):
            asked.append(len(index))
            return lazy.rows(index)

    request = MetricRequest(fg_ks=(1, 5))
    expected = compute_retrieval(dense, None, q_labels, g_labels, q_inst, g_inst, request=request, chunk_size=7)
    got = compute_retrieval(Counting(), None, q_labels, g_labels, q_inst, g_inst, request=request, chunk_size=7)
    assert got.summary(["all"]) == expected.summary(["all"]) and max(asked) <= 7 and sum(asked) == 40
    keep = np.arange(30) % 3 == 0
    subset = compute_retrieval(lazy.columns(keep), None, q_labels, g_labels[keep], q_inst, g_inst[keep],
                               request=request)
    assert subset.summary(["all"]) == compute_retrieval(dense[:, keep], None, q_labels, g_labels[keep], q_inst,
                                                        g_inst[keep], request=request).summary(["all"])
