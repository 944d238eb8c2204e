"""sbir.index: exact top-k against a numpy reference (ties included), approximate recall, persistence, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbir.index import IndexSpec, RetrievalIndex, build_index, recall_at_k, top_k


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: stable descending order of ``q @ g.T`` (ties by ascending gallery id)."""
    scores = q @ g.T
    ids = np.argsort(-scores, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def _dyadic(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows with entries in {-0.5, 0, 0.5}: every inner product is exact in float32, so ties are exact."""
    return (rng.integers(-1, 2, size=(n, d)) * 0.5).astype(np.float32)


# ---------------------------------------------------------------- exact search


@pytest.mark.parametrize("k", [1, 7, 50, 200, 201, 1000])  # 200 = n, beyond n is clipped
@pytest.mark.parametrize("nq", [1, 3, 40])  # a single query and small/larger batches
def test_exact_matches_numpy_reference(k: int, nq: int) -> None:
    rng = np.random.default_rng(k * 100 + nq)
    g, q = _unit(rng, 200, 16), _unit(rng, nq, 16)
    scores, ids = build_index(g).search(q, k)
    want_s, want_i = _reference(q, g, k)
    assert scores.shape == ids.shape == (nq, min(k, 200))
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=0, atol=1e-6)


def test_top_k_is_exact_search_and_zero_queries_give_empty_arrays() -> None:
    rng = np.random.default_rng(1)
    g, q = _unit(rng, 30, 8), _unit(rng, 5, 8)
    np.testing.assert_array_equal(top_k(q, g, 4)[1], _reference(q, g, 4)[1])
    scores, ids = build_index(g).search(np.empty((0, 8), np.float32), 50)
    assert scores.shape == ids.shape == (0, 30) and scores.dtype == np.float32 and ids.dtype == np.int64


@pytest.mark.parametrize("nq", [1, 64])
def test_exact_ties_come_in_ascending_id_order_at_every_k(nq: int) -> None:
    rng = np.random.default_rng(2)
    # 300 rows from only 3^6 patterns plus 80 copies of one row: long runs of equal scores everywhere,
    # including runs far longer than the first search depth, so the deepening loop must run.
    g = np.concatenate([_dyadic(rng, 220, 6), np.repeat(_dyadic(rng, 1, 6), 80, axis=0)])
    g = g[rng.permutation(len(g))]
    q = np.concatenate([g[:1], _dyadic(rng, nq - 1, 6)]) if nq > 1 else g[:1]
    index = build_index(g)
    for k in [1, 2, 3, 5, 10, 17, 33, 64, 79, 80, 81, 150, 299, 300]:
        scores, ids = index.search(q, k)
        want_s, want_i = _reference(q, g, k)
        np.testing.assert_array_equal(ids, want_i, err_msg=f"k={k}")
        np.testing.assert_array_equal(scores, want_s, err_msg=f"k={k}")


# ---------------------------------------------------------------- approximate search


@pytest.fixture(scope="module")
def gallery_5k() -> tuple[np.ndarray, np.ndarray, RetrievalIndex]:
    rng = np.random.default_rng(3)
    g, q = _unit(rng, 5000, 32), _unit(rng, 200, 32)
    return g, q, build_index(g)


@pytest.mark.parametrize("spec", [IndexSpec("hnsw", hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=96),
                                  IndexSpec("ivf", ivf_nlist=32, ivf_nprobe=24)], ids=["hnsw", "ivf"])
def test_approximate_recall_at_10(gallery_5k: tuple, spec: IndexSpec) -> None:
    g, q, exact = gallery_5k
    approx = build_index(g, spec)
    assert recall_at_k(approx, exact, q, 10) >= 0.9
    scores, ids = approx.search(q, 10)
    np.testing.assert_array_equal(np.lexsort((ids, -scores)), np.tile(np.arange(10), (len(q), 1)))
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, g[ids]), atol=1e-5)


def test_ivf_probing_every_list_is_exact(gallery_5k: tuple) -> None:
    g, q, exact = gallery_5k
    assert recall_at_k(build_index(g, IndexSpec("ivf", ivf_nlist=16, ivf_nprobe=16)), exact, q, 10) == 1.0
    assert recall_at_k(build_index(g, IndexSpec("ivf", ivf_nlist=16, ivf_nprobe=1)), exact, q, 10) < 1.0


def test_ivf_default_nlist_seeding_and_padding_of_missing_results() -> None:
    rng = np.random.default_rng(4)
    g, q = _unit(rng, 400, 8), _unit(rng, 6, 8)
    a, b = build_index(g, IndexSpec("ivf", seed=5)), build_index(g, IndexSpec("ivf", seed=5))
    assert a.spec.ivf_nlist == 80  # round(4 * sqrt(400))
    assert all(np.array_equal(x, y) for x, y in zip(a.search(q, 50), b.search(q, 50), strict=True))
    assert build_index(g[:3], IndexSpec("ivf")).spec.ivf_nlist == 3  # clipped to n
    seeds = [build_index(g, IndexSpec("ivf", ivf_nlist=40, ivf_nprobe=1, seed=s)).search(q, 5)[1] for s in (5, 6)]
    assert not np.array_equal(*seeds)  # the k-means seed reaches FAISS
    scores, ids = build_index(g, IndexSpec("ivf", ivf_nlist=40, ivf_nprobe=1)).search(q, 60)  # ~10 per list
    missing = ids == -1
    assert missing.any() and not missing.all(axis=1).any()
    np.testing.assert_array_equal(np.isneginf(scores), missing)
    assert (np.diff(missing.astype(int), axis=1) >= 0).all()  # padding only at the end of each row


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("spec", [IndexSpec("exact"), IndexSpec("hnsw", hnsw_m=8, hnsw_ef_search=20),
                                  IndexSpec("ivf", ivf_nprobe=3)], ids=lambda s: s.kind)
def test_save_load_round_trip(tmp_path: Path, spec: IndexSpec) -> None:
    rng = np.random.default_rng(6)
    g, q = _unit(rng, 500, 16), _unit(rng, 25, 16)
    index = build_index(g, spec)
    index.save(tmp_path / "gallery.faiss")
    loaded = RetrievalIndex.load(tmp_path / "gallery.faiss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.faiss", "gallery.faiss.json"]
    assert (loaded.spec, loaded.size, loaded.dim) == (index.spec, 500, 16)
    for got, want in zip(loaded.search(q, 10), index.search(q, 10), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spec", [IndexSpec("exact"), IndexSpec("hnsw", hnsw_m=8),
                                  IndexSpec("ivf", ivf_nlist=7)], ids=lambda s: s.kind)
def test_vectors_are_the_indexed_rows_in_id_order(tmp_path: Path, spec: IndexSpec) -> None:
    g = _unit(np.random.default_rng(8), 120, 12)
    index = build_index(g.astype(np.float64), spec)
    index.save(tmp_path / "gallery.faiss")
    for stored in (index.vectors(), RetrievalIndex.load(tmp_path / "gallery.faiss").vectors()):
        assert stored.dtype == np.float32 and stored.shape == (120, 12)
        np.testing.assert_array_equal(stored, g)


def test_load_rejects_corrupt_or_mismatched_sidecar(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    build_index(_unit(rng, 50, 8)).save(tmp_path / "a.faiss")
    build_index(_unit(rng, 60, 8), IndexSpec("hnsw")).save(tmp_path / "b.faiss")
    side = tmp_path / "a.faiss.json"
    side.write_text((tmp_path / "b.faiss.json").read_text())  # sidecar of another index
    with pytest.raises(ValueError, match=r"a\.faiss\.json.*does not match index file .*a\.faiss"):
        RetrievalIndex.load(tmp_path / "a.faiss")
    meta = json.loads((tmp_path / "b.faiss.json").read_text())
    side.write_text(json.dumps({**meta, "spec": {**meta["spec"], "kind": "exact"}, "size": 50}))
    RetrievalIndex.load(tmp_path / "a.faiss")  # consistent again
    side.write_text(json.dumps({**meta, "spec": {**meta["spec"], "kind": "exact"}, "size": 51}))
    with pytest.raises(ValueError, match="does not match.*size=50"):
        RetrievalIndex.load(tmp_path / "a.faiss")
    side.write_text("{not json")
    with pytest.raises(ValueError, match=r"sidecar .*a\.faiss\.json is unreadable"):
        RetrievalIndex.load(tmp_path / "a.faiss")
    (tmp_path / "a.faiss").write_bytes(b"garbage")
    side.write_text((tmp_path / "b.faiss.json").read_text())
    with pytest.raises(ValueError, match=r"cannot read FAISS index file .*a\.faiss"):
        RetrievalIndex.load(tmp_path / "a.faiss")


# ---------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors() -> None:
    rng = np.random.default_rng(8)
    g = _unit(rng, 20, 4)
    index = build_index(g)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        index.search(g[:2], 0)
    with pytest.raises(ValueError, match="queries have dimension 3, the index has dimension 4"):
        index.search(g[:2, :3], 5)
    with pytest.raises(ValueError, match="queries must be a 2-D array"):
        index.search(g[0], 5)
    with pytest.raises(ValueError, match="queries contains NaN"):
        index.search(np.full((1, 4), np.nan, np.float32), 5)
    bad = g.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="vectors contains NaN"):
        build_index(bad)
    with pytest.raises(ValueError, match="at least one row"):
        build_index(np.empty((0, 4), np.float32))
    with pytest.raises(ValueError, match="vectors must be a 2-D array"):
        build_index(g[0])
    with pytest.raises(ValueError, match="ivf_nlist=30 exceeds the number of vectors n=20"):
        build_index(g, IndexSpec("ivf", ivf_nlist=30))
    with pytest.raises(ValueError, match="indexes differ"):
        recall_at_k(build_index(g[:10]), index, g[:2], 5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "annoy"}, r"IndexSpec\.kind must be one of \['exact', 'hnsw', 'ivf'\], got 'annoy'"),
    ({"hnsw_m": 0}, r"IndexSpec\.hnsw_m must be an integer >= 1, got 0"),
    ({"hnsw_ef_search": 2.5}, r"IndexSpec\.hnsw_ef_search must be an integer"),
    ({"ivf_nlist": -4}, r"IndexSpec\.ivf_nlist must be an integer >= 1"),
    ({"ivf_nprobe": 0}, r"IndexSpec\.ivf_nprobe must be an integer >= 1"),
    ({"seed": -1}, r"IndexSpec\.seed must be an integer >= 0"),
])
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexSpec(**kwargs)


def test_import_pulls_in_no_heavy_or_pipeline_modules() -> None:
    banned = ["torch", "dvc", "prefect", "bentoml", "great_expectations", "models", "stages", "flows", "serving"]
    code = f"import sys, sbir.index; print([m for m in {banned!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
