"""Batch scoring returns exactly what `recommend` returns and reads back from parquet and CSV (Ray: test_ray.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scenerec.cli import cli
from scenerec.errors import ScenerecError, UnknownSceneError, UnknownUserError
from scenerec.recommend.batch_output import BatchScores, read_scores
from scenerec.recommend.recommender import Recommender


@pytest.fixture
def tiny(tiny_settings, encoder):
    with Recommender.open(settings=tiny_settings, encoder=encoder) as rec:
        yield rec


def assert_agrees(rec: Recommender, users: list[str], scene: str, k: int) -> BatchScores:
    batch = rec.score_batch(users, scene, k, batch_size=7)
    assert batch.user_ids == users
    for user_id, ids, scores, raws in zip(batch.user_ids, batch.item_ids, batch.scores, batch.raw_scores):
        single = rec.recommend(user_id, scene, k)
        assert ids == [r.item_id for r in single], user_id
        assert scores == [r.score for r in single], user_id  # the readable score recommend shows
        assert [round(s, 6) for s in raws] == [round(r.raw_score, 6) for r in single], user_id
        assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    return batch


@pytest.mark.parametrize("scene, k", [("films", 3), ("films", 50), ("books", 5)])
def test_equals_recommend_for_every_tiny_user(tiny, scene, k):
    batch = assert_agrees(tiny, tiny.items.users(), scene, k)
    assert all(len(set(ids)) == len(ids) for ids in batch.item_ids)
    history = {u: set(tiny.history(u).item_ids) for u in batch.user_ids}
    assert all(not set(ids) & history[u] for u, ids in zip(batch.user_ids, batch.item_ids))


@pytest.mark.slow
def test_equals_recommend_for_demo_users(demo_settings, encoder):
    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        users = rec.items.users()
        for scene in rec.items.scenes():
            assert_agrees(rec, users, scene, 10)


def test_errors(tiny):
    with pytest.raises(UnknownUserError):
        tiny.score_batch(["alice", "nobody"], "films", 3)
    with pytest.raises(UnknownSceneError):
        tiny.score_batch(["alice"], "groceries", 3)
    with pytest.raises(ScenerecError, match="k must be between"):
        tiny.score_batch(["alice"], "films", 0)
    assert len(tiny.score_batch([], "films", 3)) == 0


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_output_reads_back(tiny, tmp_path, suffix):
    users = tiny.items.users()
    path = tmp_path / "out" / f"scores{suffix}"
    batch = tiny.score_batch(users, "films", 4, out=path)
    assert path.is_file()
    back = read_scores(path)
    assert back.user_ids == batch.user_ids and back.item_ids == batch.item_ids
    assert sum(back.scores, []) == pytest.approx(sum(batch.scores, []), rel=1e-12)
    assert sum(back.raw_scores, []) == pytest.approx(sum(batch.raw_scores, []), rel=1e-12)
    if suffix == ".parquet":
        assert (back.scene, back.k) == ("films", 4)
    with pytest.raises(ScenerecError, match=r"\.parquet or \.csv"):
        batch.write(tmp_path / "scores.txt")


def test_cli_users_file_and_usage_errors(tiny_settings, tmp_path):
    runner = CliRunner()
    users = tmp_path / "users.txt"
    users.write_text("dan\n\n# a comment\nbob\n", encoding="utf-8")
    base = ["score", "--scene", "books", "--data-dir", str(tiny_settings.data_dir)]
    out = runner.invoke(cli, [*base, "--users", str(users), "--out", str(tmp_path / "s.csv"), "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["columns"] == ["user_id", "rank", "item_id", "score", "raw_score"]
    first = shown["first_user"]["items"]
    assert first[0]["score"] > first[-1]["score"] and all(0 <= i["score"] <= 1 for i in first)
    assert first[0]["score"] != first[0]["raw_score"]  # the readable score, not the raw RRF one
    assert read_scores(tmp_path / "s.csv").user_ids == ["bob", "dan"]
    assert runner.invoke(cli, [*base, "--out", str(tmp_path / "x.csv")]).exit_code != 0  # no users given
    bad = runner.invoke(cli, [*base, "--all", "--out", str(tmp_path / "p")])
    assert bad.exit_code != 0 and "--engine ray" in bad.output  # a folder needs the ray engine
