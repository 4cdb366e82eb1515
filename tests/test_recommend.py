"""Recommendations a user would check: right scene, nothing already owned, evidence that makes sense."""

from __future__ import annotations

import pytest

from scenerec.errors import ScenerecError, StoreError, UnknownSceneError, UnknownUserError
from scenerec.models import UserHistory
from scenerec.recommend.recommender import Recommender
from scenerec.recommend.retrieval import reciprocal_rank_fusion


@pytest.fixture
def tiny(tiny_settings, encoder):
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        yield rec


def test_cross_scene_transfer_with_no_history_in_target(tiny):
    """bob has only cooking books; in films he gets the cooking films, explained by his books."""
    recs = tiny.recommend("bob", "films", k=3)
    assert {r.item_id for r in recs[:2]} == {"f4", "f6"}
    assert all(r.scene == "films" and r.source == "personalized" for r in recs)
    assert recs[0].evidence and {e.item_id for e in recs[0].evidence} <= {"b4", "b7"}
    assert all(e.scene == "books" for e in recs[0].evidence)


def test_history_is_excluded_and_no_duplicates(tiny):
    recs = tiny.recommend("alice", "films", k=9)
    ids = [r.item_id for r in recs]
    assert "f5" not in ids  # already seen
    assert len(ids) == len(set(ids)) == 9  # 10 films minus the one in her history
    assert ids[0] == "f1", "the dragon film should lead for a reader of dragon novels"


def test_k_larger_than_scene_returns_what_exists(tiny):
    assert len(tiny.recommend("dan", "books", k=50)) == 8


@pytest.mark.parametrize("k", [0, -1, 100_000])
def test_k_out_of_bounds(tiny, k):
    with pytest.raises(ScenerecError, match="k must be between"):
        tiny.recommend("alice", "films", k=k)


def test_unknown_user_and_scene(tiny):
    with pytest.raises(UnknownUserError, match="nobody"):
        tiny.recommend("nobody", "films")
    with pytest.raises(UnknownSceneError, match="known scenes: books, films"):
        tiny.recommend("alice", "groceries")


def test_empty_history_gets_labelled_popular_items(tiny):
    recs = tiny.recommend_for_history(UserHistory(user_id="new", entries=[]), "films", k=3)
    assert [r.source for r in recs] == ["popular"] * 3
    assert recs[0].item_id in {"f1", "f3", "f4", "f5", "f8"}  # the films that have any interactions
    assert all(not r.evidence for r in recs)


def test_search_items_finds_by_meaning_and_words(tiny):
    hits = tiny.search_items("dragons", k=3)
    assert {"b5", "f1"} <= {h.item_id for h in hits}
    assert all(h.scene == "films" for h in tiny.search_items("dragons", scene="films", k=2))


def test_missing_data_dir_says_how_to_fix(tmp_path, make_settings):
    with pytest.raises(StoreError, match="scenerec ingest"):
        Recommender.open(settings=make_settings("empty"))


def test_reciprocal_rank_fusion_orders_and_breaks_ties_by_id():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 1.0], k=60)
    assert [i for i, _, _ in fused] == ["b", "a", "c"]
    tied = reciprocal_rank_fusion([["y"], ["x"]], [1.0, 1.0], k=60)
    assert [i for i, _, _ in tied] == ["x", "y"]


@pytest.mark.slow
def test_demo_users_get_valid_lists(demo_settings, encoder):
    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        for user_id in rec.items.users(limit=15):
            history = set(rec.history(user_id).item_ids)
            for scene in rec.items.scenes():
                recs = rec.recommend(user_id, scene, k=10)
                ids = [r.item_id for r in recs]
                assert len(ids) == 10 and len(set(ids)) == 10
                assert all(r.scene == scene for r in recs)
                assert all(rec.items.get_items([i])[i].scene == scene for i in ids)
                assert not history & set(ids)
                assert all(r.evidence for r in recs)
