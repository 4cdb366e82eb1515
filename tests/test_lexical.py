"""BM25Index: the same scores as rank_bm25.BM25Okapi, ordering, persistence, edge cases."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from scenerec.errors import StoreError
from scenerec.stores.lexical import BM25Index, tokenize

SMALL = [
    "The Hobbit. Fantasy novel with dragons and dwarves",
    "A field guide to North American birds",
    "The art of watercolor painting: brushes, pigments",
    "Mastering the kitchen knife -- cooking technique",
    "Dragonriders of Pern. Fantasy novel, dragons",
    "the the the the dragons",
    "",
    "Stars and planets guide; astronomy & telescope",
]

WORDS = [f"w{i}" for i in range(60)] + ["dragon", "bird", "cook", "the", "a", "art"]


def generated(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # a skewed vocabulary, so some terms are in more than half the documents (rank-bm25's idf floor)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(WORDS))]
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(0, 25))) for _ in range(n)]


def assert_same_as_rank_bm25(documents: list[str], queries: list[str]) -> None:
    index = BM25Index.build([f"d{i}" for i in range(len(documents))], documents)
    reference = BM25Okapi([tokenize(d) for d in documents])
    for query in queries:
        expected = reference.get_scores(tokenize(query))
        np.testing.assert_allclose(index.scores(query), expected, rtol=0, atol=1e-5, err_msg=query)


def test_tokenize_is_lowercase_unicode_and_drops_punctuation() -> None:
    assert tokenize("Hello, WORLD! snake_case x2") == ["hello", "world", "snake", "case", "x2"]
    assert tokenize("Café Crème — naïve") == ["café", "crème", "naïve"]
    assert tokenize("无线耳机 Bluetooth-5.0") == ["无线耳机", "bluetooth", "5", "0"]
    assert tokenize("  ...  ") == []


def test_scores_match_rank_bm25_on_a_small_corpus() -> None:
    queries = ["dragons", "fantasy dragons novel", "the", "The guide guide", "unknownterm", "birds telescope art"]
    assert_same_as_rank_bm25(SMALL, queries)


def test_scores_match_rank_bm25_on_generated_documents() -> None:
    documents = generated(400)
    rng = random.Random(1)
    queries = [" ".join(rng.choices(WORDS + ["nowhere"], k=rng.randint(1, 12))) for _ in range(40)]
    assert_same_as_rank_bm25(documents, queries)


def test_negative_idf_floor_is_applied() -> None:
    # "the" is in 3 of 4 documents: its raw idf is negative and rank-bm25 floors it at epsilon * average idf
    documents = ["the cat", "the dog", "the bird", "fish"]
    assert_same_as_rank_bm25(documents, ["the", "the cat", "fish the"])


def test_search_orders_best_first_and_omits_zero_scores() -> None:
    index = BM25Index.build([f"d{i}" for i in range(len(SMALL))], SMALL)
    hits = index.search("fantasy dragons", 10)
    scores = index.scores("fantasy dragons")
    assert [s for _, s in hits] == sorted((s for s in scores if s > 0), reverse=True)
    assert {i for i, _ in hits} == {f"d{i}" for i, s in enumerate(scores) if s > 0}
    assert hits[0][0] in {"d0", "d4"}
    assert len(index.search("fantasy dragons", 1)) == 1


def test_search_breaks_ties_by_id_even_at_the_cut() -> None:
    ids = ["c", "a", "d", "b"] + [f"other{i}" for i in range(6)]
    index = BM25Index.build(ids, ["red apple"] * 4 + [f"green pear {i}" for i in range(6)])
    assert [i for i, _ in index.search("red", 10)] == ["a", "b", "c", "d"]
    assert [i for i, _ in index.search("red", 2)] == ["a", "b"]


def test_search_excludes_ids() -> None:
    ids = ["c", "a", "d", "b"] + [f"other{i}" for i in range(6)]
    index = BM25Index.build(ids, ["red apple"] * 3 + ["red"] + [f"green pear {i}" for i in range(6)])
    assert [i for i, _ in index.search("red", 2, exclude={"a", "unknown"})] == ["b", "c"]
    assert index.search("red", 10, exclude=ids[:4]) == []


def test_scores_are_in_id_order() -> None:
    index = BM25Index.build(["z", "y", "x"], ["apple", "pear", "apple pie"])
    scores = index.scores("pear")
    assert index.ids == ["z", "y", "x"]
    assert scores[1] > 0 and scores[0] == 0 and scores[2] == 0


def test_unknown_terms_and_empty_queries_score_zero() -> None:
    index = BM25Index.build(["a", "b"], ["red apple", "green pear"])
    assert not index.scores("blue banana").any()
    assert not index.scores("").any()
    assert index.search("blue banana", 5) == []
    assert index.search("", 5) == []
    assert index.search("red", 0) == []


def test_empty_index(tmp_path: Path) -> None:
    index = BM25Index.build([], [])
    assert len(index) == 0
    assert index.scores("anything").shape == (0,)
    assert index.search("anything", 10) == []
    index.save(tmp_path / "empty.npz")
    assert len(BM25Index.load(tmp_path / "empty.npz")) == 0


def test_documents_without_tokens() -> None:
    index = BM25Index.build(["a", "b"], ["", "!!!"])
    assert index.search("a", 5) == []


def test_unicode_documents_are_searchable() -> None:
    index = BM25Index.build(["zh", "fr", "en"], ["无线 耳机 蓝牙", "Crème brûlée à la française", "Wireless earbuds"])
    assert index.search("耳机", 5)[0][0] == "zh"
    assert index.search("CRÈME", 5)[0][0] == "fr"


def test_save_load_round_trip(tmp_path: Path) -> None:
    documents = generated(200, seed=3)
    ids = [f"item-{i:03d}" for i in range(len(documents))]
    index = BM25Index.build(ids, documents)
    path = tmp_path / "scene.npz"
    index.save(path)
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))
    loaded = BM25Index.load(path)
    assert loaded.ids == ids and len(loaded) == len(ids)
    for query in ["w1 w2", "dragon bird", "the"]:
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
        assert loaded.search(query, 7, exclude={"item-001"}) == index.search(query, 7, exclude={"item-001"})
    index.save(path)  # overwriting in place works
    assert BM25Index.load(path).ids == ids


def test_load_of_a_broken_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(StoreError):
        BM25Index.load(path)
    with pytest.raises(StoreError):
        BM25Index.load(tmp_path / "missing.npz")


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError):
        BM25Index.build(["a", "a"], ["x", "y"])


def test_english_function_words_do_not_match_across_titles() -> None:
    index = BM25Index.build(["x", "y", "z"], ["the big short", "julie and julia cooking", "a quiet place"])
    assert tokenize("The Complete Bread Baking Book") == ["complete", "bread", "baking", "book"]
    assert index.search("the kitchen knife", top_n=3) == []
    assert [i for i, _ in index.search("the cooking knife", top_n=3)] == ["y"]
