"""The torch scene index returns exactly what brute force returns, ties broken by item id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenerec.stores.scene_index import CPUSceneIndex, SceneIndex, SceneIndexes, index_class, make_index

CUDA = torch.cuda.is_available()


def brute_force(ids, vectors, queries, k, exclude=None):
    """float64 scores, sort by (score desc, id asc), drop excluded: the definition of the answer."""
    ids = np.asarray(ids)
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    out = []
    for row, s in enumerate(scores):
        keep = [i for i in range(len(ids)) if not exclude or ids[i] not in exclude[row]]
        keep.sort(key=lambda i: (-s[i], ids[i]))
        out.append([str(ids[i]) for i in keep[:k]])
    return out


def ids_of(index: SceneIndex, result):
    return [[i for i, _ in row] for row in result.rows(index.ids)]


def random_scene(rng, n, d=24, *, ties=False):
    if ties:  # small integers: exact float arithmetic, many exactly equal scores
        vectors = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    else:
        vectors = rng.standard_normal((n, d)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{v:07d}" for v in rng.choice(10**7, size=n, replace=False)]  # unsorted ids
    return ids, vectors


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_same_ids_as_brute_force(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    ids, vectors = random_scene(rng, n, ties=ties)
    queries = random_scene(rng, 23, ties=ties)[1]
    k = int(rng.integers(1, 120))
    index = CPUSceneIndex(ids, vectors, chunk_size=int(rng.integers(7, 600)))
    assert ids_of(index, index.search(queries, k)) == brute_force(ids, vectors, queries, k)


@pytest.mark.parametrize("ties", [False, True])
def test_wide_chunks_with_exclusions(ties):
    """Chunks much wider than k, a ragged last chunk, and many exclusions."""
    rng = np.random.default_rng(5)
    ids, vectors = random_scene(rng, 9000, d=12, ties=ties)
    queries = random_scene(rng, 11, d=12, ties=ties)[1]
    exclude = [set(rng.choice(ids, size=200, replace=False)) for _ in range(11)]
    index = CPUSceneIndex(ids, vectors, chunk_size=4001)
    got = ids_of(index, index.search(queries, 10, exclude))
    assert got == brute_force(ids, vectors, queries, 10, exclude)


def test_ties_go_to_the_lower_id():
    vectors = np.ones((5, 4), dtype=np.float32)
    index = CPUSceneIndex(["e", "c", "a", "d", "b"], vectors, chunk_size=2)
    assert ids_of(index, index.search(np.ones((1, 4), np.float32), 3)) == [["a", "b", "c"]]


@pytest.mark.parametrize("n, chunk", [(100, 7), (100, 10), (101, 10), (99, 100), (100, 1), (5, 1000)])
def test_chunk_boundaries(n, chunk):
    rng = np.random.default_rng(n * chunk)
    ids, vectors = random_scene(rng, n)
    queries = random_scene(rng, 9)[1]
    k = min(12, n)
    index = CPUSceneIndex(ids, vectors, chunk_size=chunk)
    result = index.search(queries, k)
    assert ids_of(index, result) == brute_force(ids, vectors, queries, k)
    expected = np.sort(queries.astype(np.float64) @ vectors.astype(np.float64).T, axis=1)[:, ::-1][:, :k]
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)


def test_k_larger_than_scene_returns_every_item_in_order():
    rng = np.random.default_rng(1)
    ids, vectors = random_scene(rng, 30)
    queries = random_scene(rng, 4)[1]
    index = CPUSceneIndex(ids, vectors, chunk_size=8)
    got = ids_of(index, index.search(queries, 1000))
    assert all(len(row) == 30 for row in got)
    assert got == brute_force(ids, vectors, queries, 30)


def test_empty_scene_and_no_queries():
    index = CPUSceneIndex([], np.zeros((0, 8), np.float32))
    assert len(index) == 0
    result = index.search(np.ones((3, 8), np.float32), 10)
    assert result.rows(index.ids) == [[], [], []]
    assert index.query(np.ones((1, 8), np.float32), 5) == [[]]
    full = CPUSceneIndex(["a"], np.ones((1, 8), np.float32))
    assert full.search(np.zeros((0, 8), np.float32), 5).rows(full.ids) == []


def test_exclusions_per_query():
    rng = np.random.default_rng(7)
    ids, vectors = random_scene(rng, 200)
    queries = random_scene(rng, 6)[1]
    exclude = [set(rng.choice(ids, size=int(rng.integers(0, 40)), replace=False)) for _ in range(6)]
    exclude[0] |= {"not-in-this-scene"}
    exclude[1] = set(brute_force(ids, vectors, queries[1:2], 25)[0])  # its whole top 25
    index = CPUSceneIndex(ids, vectors, chunk_size=33)
    got = ids_of(index, index.search(queries, 25, exclude))
    assert got == brute_force(ids, vectors, queries, 25, exclude)
    assert all(not set(row) & ex for row, ex in zip(got, exclude))


def test_exclusions_leaving_fewer_than_k():
    ids = ["a", "b", "c", "d"]
    index = CPUSceneIndex(ids, np.eye(4, dtype=np.float32), chunk_size=3)
    result = index.search(np.ones((2, 4), np.float32), 4, [{"a", "c"}, set()])
    assert result.rows(index.ids)[0] == [("b", 1.0), ("d", 1.0)]
    assert [i for i, _ in result.rows(index.ids)[1]] == ids
    assert result.indices[0].tolist() == [1, 3, -1, -1]


def test_one_query_alone_equals_it_inside_a_batch():
    """Batched float32 products round differently from single ones; the exact ranking pass hides that."""
    rng = np.random.default_rng(3)
    ids, vectors = random_scene(rng, 5000, d=384)
    queries = random_scene(rng, 200, d=384)[1]
    index = CPUSceneIndex(ids, vectors)
    batch = index.search(queries, 50)
    for row in range(0, 200, 17):
        alone = index.search(queries[row : row + 1], 50)
        assert alone.indices[0].tolist() == batch.indices[row].tolist()
        assert alone.scores[0].tolist() == batch.scores[row].tolist()


def test_factory_picks_cpu_float32(make_settings):
    settings = make_settings(embedding={"device": "cpu"})
    index = make_index(settings, ["b", "a"], np.eye(2, dtype=np.float32))
    assert isinstance(index, CPUSceneIndex)
    assert index.matrix.dtype == torch.float32 and index.ids == ["a", "b"]
    assert index_class("cpu") is CPUSceneIndex


def test_refresh_after_ingest(tiny_settings, tmp_path, encoder):
    """A newer ingest bumps the store version; the next lookup rebuilds the scene's index."""
    from scenerec.recommend.recommender import Recommender
    from scenerec.stores.ingest import ingest_catalog

    from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        indexes = SceneIndexes(tiny_settings, rec.items, rec.cache, rec.encoder.name)
        before = indexes.get("films")
        assert indexes.get("films") is before  # no change, no reload
        assert len(before) == 10 and before.ids == sorted(before.ids)
        extra = [("f11", "films", "dragons of the deep", "animated dragons ocean adventure")]
        ingest_catalog(write_catalog(tmp_path / "more", TINY_ITEMS + extra, TINY_HISTORIES),
                       tiny_settings, encoder=encoder)
        after = indexes.get("films")
        assert after is not before and after.version > before.version
        assert "f11" in after.ids and len(after) == 11
        query = rec.encoder.encode(["dragons"])
        assert "f11" in [i for i, _ in indexes.query("films", query, 3)[0]]


@pytest.mark.skipif(not CUDA, reason="no CUDA device: the float16 path is only tested on a GPU")
def test_cuda_float16_within_tolerance_of_cpu():
    from scenerec.stores.scene_index import CUDASceneIndex

    rng = np.random.default_rng(11)
    ids, vectors = random_scene(rng, 20000, d=384)
    queries = random_scene(rng, 64, d=384)[1]
    cpu, gpu = CPUSceneIndex(ids, vectors), CUDASceneIndex(ids, vectors, chunk_size=7000)
    assert gpu.matrix.dtype == torch.float16 and gpu.matrix.is_cuda
    exact, half = cpu.search(queries, 50), gpu.search(queries, 50)
    np.testing.assert_allclose(half.scores, exact.scores, atol=2e-3)
    overlap = [len(set(a) & set(b)) / 50 for a, b in zip(exact.indices.tolist(), half.indices.tolist())]
    assert np.mean(overlap) >= 0.98
    single = gpu.search(queries[5:6], 50)
    assert single.indices[0].tolist() == half.indices[5].tolist()
