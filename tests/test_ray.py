"""Ray Data engines: batch scoring equals the one-process run row for row; ray ingest encodes into the cache
exactly what a local ingest does, and a worker killed mid-batch leaves no torn row behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray", reason="the scale extra (ray[data]) is not installed")

from scenerec.catalog import load_catalog
from scenerec.cli import cli
from scenerec.recommend.batch_output import COLUMNS, read_scores
from scenerec.recommend.recommender import Recommender
from scenerec.settings import EmbeddingSettings
from scenerec.stores.embedding_cache import EmbeddingCache
from scenerec.stores.embeddings import make_encoder
from scenerec.stores.ingest import ingest_catalog
from scenerec.stores.ray_encoding import RAY_ENV, encode_with_ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) shared by this module's tests."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 1024**2,
             runtime_env={"env_vars": dict(RAY_ENV)})
    yield ray
    ray.shutdown()


def test_cli_score_on_ray_equals_one_process_run(local_ray, demo_settings, encoder, tmp_path):
    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        users = rec.items.users()
        local = rec.score_batch(users, "office", 10)
    out = tmp_path / "ray_scores"
    result = CliRunner().invoke(cli, ["score", "--scene", "office", "--all", "-k", "10", "--engine", "ray",
                                      "--batch-size", "64", "--out", str(out),
                                      "--data-dir", str(demo_settings.data_dir)])
    assert result.exit_code == 0, result.output
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) > 1  # Ray really split the users across tasks
    import pyarrow.parquet as pq

    assert tuple(pq.read_table(parts[0]).column_names) == COLUMNS
    back = read_scores(out)
    order = {u: i for i, u in enumerate(back.user_ids)}
    assert sorted(order) == sorted(local.user_ids) and len(back) == len(local)
    for user, ids, scores in zip(local.user_ids, local.item_ids, local.scores):
        assert back.item_ids[order[user]] == ids, user
        np.testing.assert_allclose(back.scores[order[user]], scores, rtol=0, atol=1e-12)
    for user, raws in zip(local.user_ids, local.raw_scores):  # the raw model score travels too
        np.testing.assert_allclose(back.raw_scores[order[user]], raws, rtol=0, atol=1e-12)
    again = CliRunner().invoke(cli, ["score", "--scene", "office", "--all", "--engine", "ray",
                                     "--out", str(out), "--data-dir", str(demo_settings.data_dir)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)


def test_ingest_on_ray_fills_the_cache_like_a_local_ingest(local_ray, tiny_catalog, make_settings, encoder):
    settings = make_settings("ray", embedding={"show_progress": False})
    stages: list[str] = []
    report = ingest_catalog(tiny_catalog, settings, engine="ray", on_stage=stages.append)
    assert report.encoded == report.items > 0 and any(s.startswith("encode ") for s in stages)
    texts = {i.content_hash: i.document for i in load_catalog(tiny_catalog).items}
    with EmbeddingCache(settings.data_dir / "embeddings.sqlite") as cache:
        stored = cache.get_many(encoder.name, list(texts))
    assert len(stored) == len(texts) == report.items
    expected = encoder.encode(list(texts.values()))
    for (content_hash, _), row in zip(texts.items(), expected):
        np.testing.assert_allclose(stored[content_hash], row, atol=1e-5)


def test_killed_encoder_worker_leaves_no_torn_row(local_ray, tmp_path, encoder):
    """The actor dies (os._exit) in the middle of its second batch; Ray restarts it and retries."""
    marker = tmp_path / "killed-once"

    def dying_encoder(settings: EmbeddingSettings):
        inner = make_encoder(settings)

        class Dying(type(inner)):  # type: ignore[misc]
            def __init__(self) -> None:
                self.__dict__.update(inner.__dict__)
                self.calls = 0

            def encode(self, texts, *, show_progress=False):
                self.calls += 1
                if self.calls == 2 and not marker.exists():
                    marker.write_text("x")
                    os._exit(1)  # no cleanup, no exception: a worker killed mid-batch
                return inner.encode(texts)

        return Dying()

    texts = {f"h{i}": f"item number {i}: a {['red', 'blue', 'green'][i % 3]} pen" for i in range(60)}
    with EmbeddingCache(tmp_path / "embeddings.sqlite") as cache:
        vectors, encoded = encode_with_ray(EmbeddingSettings(show_progress=False), cache, texts,
                                           actors=1, batch_size=10, factory=dying_encoder)
        assert marker.exists() and encoded == 60
        rows = cache.conn.execute("SELECT content_hash, dimension, length(vector) FROM embeddings").fetchall()
    assert sorted(h for h, _, _ in rows) == sorted(texts)
    assert all(d == encoder.dimension and n == 4 * d for _, d, n in rows)  # whole rows only
    expected = encoder.encode(list(texts.values()))
    np.testing.assert_allclose(np.stack([vectors[h] for h in texts]), expected, atol=1e-5)


def test_score_batch_ray_needs_an_output_folder(demo_settings, encoder, tmp_path):
    with Recommender.open(settings=demo_settings, encoder=encoder) as rec:
        with pytest.raises(Exception, match="out=FOLDER"):
            rec.score_batch(rec.items.users()[:3], "office", 5, engine="ray")
        with pytest.raises(Exception, match="unknown batch engine"):
            rec.score_batch(rec.items.users()[:3], "office", 5, engine="spark")
    assert not Path(tmp_path / "x").exists()


def test_rerank_on_ray_equals_the_one_process_reranked_run(local_ray, tiny_settings, encoder, tmp_path):
    """`--rerank` in the Ray pipeline: each actor builds the configured LLM backend (here the fake backend,
    which scores labels by a hash of the prompt: control flow only) and reranks its users' candidates."""
    llm = tiny_settings.llm.model_copy(update={"backend": "fake", "rerank_weight": 0.5, "candidates": 6})
    settings = tiny_settings.model_copy(update={"llm": llm})
    with Recommender.open(settings=settings, encoder=encoder) as rec:
        users = rec.items.users()
        plain = rec.score_batch(users, "films", 3)
        local = rec.score_batch(users, "films", 3, rerank=True)
        distributed = rec.score_batch(users, "films", 3, rerank=True, engine="ray", out=tmp_path / "parts",
                                      batch_size=1)
    assert len(list((tmp_path / "parts").glob("*.parquet"))) > 1  # several actor batches
    assert local.item_ids != plain.item_ids  # the LLM stage really changed a list
    assert distributed.user_ids == local.user_ids == users
    assert distributed.item_ids == local.item_ids
    for ours, theirs in zip(distributed.scores + distributed.raw_scores, local.scores + local.raw_scores):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
