"""`scenerec recommend --explain` as a user runs it, and `rerank_batch` over a real Recommender."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from scenerec.llm.fake import FakeBackend
from scenerec.models import Recommendation
from scenerec.recommend.recommender import Recommender
from scenerec.settings import Settings


def run(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenerec", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_explain_adds_an_explanation_to_each_item(tiny_settings: Settings) -> None:
    plain = run(
        "recommend",
        "--user",
        "carol",
        "--scene",
        "films",
        "-k",
        "4",
        "--json",
        data_dir=tiny_settings.data_dir,
    )
    out = run(
        "recommend",
        "--user",
        "carol",
        "--scene",
        "films",
        "-k",
        "4",
        "--json",
        "--explain",
        "--backend",
        "fake",
        data_dir=tiny_settings.data_dir,
    )
    assert out.returncode == 0, out.stderr
    recs = TypeAdapter(list[Recommendation]).validate_json(out.stdout)
    before = TypeAdapter(list[Recommendation]).validate_json(plain.stdout)
    assert [r.item_id for r in recs] == [r.item_id for r in before]  # rerank_weight 0: retrieval order
    assert all(r.explanation and any(f"«{e.title[:40]}" in r.explanation for e in r.evidence) for r in recs)
    text = run(
        "recommend",
        "--user",
        "carol",
        "--scene",
        "films",
        "-k",
        "2",
        "--explain",
        "--backend",
        "fake",
        data_dir=tiny_settings.data_dir,
    )
    assert "«" in text.stdout and "of the lift" in text.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("--explain", "--backend", "gpt9"), "unknown LLM backend 'gpt9'", 1),
        (("--explain", "-m", "HuggingFaceTB/SmolLM2-135M-Instruct"), "never downloads models", 1),
        (("--backend", "fake"), "add --explain", 2),
        (("--explain", "--backend", "openai", "-m", "x"), "needs llm.base_url", 1),
    ],
)
def test_llm_errors_are_one_line(
    tiny_settings: Settings, args: tuple[str, ...], message: str, code: int
) -> None:
    start = time.monotonic()
    out = run("recommend", "--user", "carol", "--scene", "films", *args, data_dir=tiny_settings.data_dir)
    assert out.returncode == code
    assert message in out.stderr and "Traceback" not in out.stderr
    assert time.monotonic() - start < 60  # fails fast: nothing is downloaded or loaded


def test_unknown_user_fails_before_a_model_loads(tiny_settings: Settings) -> None:
    out = run(
        "recommend",
        "--user",
        "nobody",
        "--scene",
        "films",
        "--explain",
        data_dir=tiny_settings.data_dir,
        env={"SCENEREC_LLM__MODEL": "/nonexistent/model.gguf"},
    )
    assert out.returncode == 1 and "unknown user 'nobody'" in out.stderr


def test_rerank_batch_over_a_recommender(tiny_settings: Settings, encoder: object) -> None:
    backend = FakeBackend()
    llm = tiny_settings.llm.model_copy(update={"backend": "fake", "rerank_weight": 0.5})
    with Recommender(tiny_settings, encoder=encoder) as recommender:  # type: ignore[arg-type]
        users = ["alice", "bob", "carol"]
        histories = [recommender.history(u) for u in users]
        # as many candidates as `recommend_explained` takes, so the single run sees the same list
        cands = [recommender.recommend_for_history(h, "films", max(3, llm.candidates)) for h in histories]
        done: list[int] = []
        results = recommender.rerank_batch(
            histories, "films", cands, backend, k=3, settings=llm, progress=done.append
        )
        single = recommender.recommend_explained("bob", "films", 3, FakeBackend(), llm)
    assert sum(done) == 3
    for history, candidates, result in zip(histories, cands, results):
        ids = [r.item_id for r in result.recommendations]
        assert len(ids) == len(set(ids)) == 3
        assert set(ids) <= {c.item_id for c in candidates}
        assert not set(ids) & set(history.item_ids)
        assert result.counters.llm_scored_users == 1
    assert [r.item_id for r in single.recommendations] == [r.item_id for r in results[1].recommendations]
    # the profiles went to the data directory's store, once per user
    assert (Path(tiny_settings.data_dir) / "profiles.sqlite").exists()


@pytest.mark.slow
@pytest.mark.llm
def test_end_to_end_explain_with_the_embedded_model(
    demo_settings: Settings, embedded_llm: object, llm_cache_dir: Path
) -> None:
    from scenerec.recommend.recommender import pick_demo_user

    with Recommender(demo_settings) as recommender:
        user_id, scene = pick_demo_user(recommender)
        history = set(recommender.history(user_id).item_ids)
    start = time.monotonic()
    out = run(
        "recommend",
        "--user",
        user_id,
        "--scene",
        scene,
        "-k",
        "5",
        "--json",
        "--explain",
        data_dir=demo_settings.data_dir,
        env={"SCENEREC_LLM__CACHE_DIR": str(llm_cache_dir)},
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    recs = TypeAdapter(list[Recommendation]).validate_json(out.stdout)
    assert len(recs) == 5 == len({r.item_id for r in recs})
    assert all(r.scene == scene and r.item_id not in history for r in recs)
    for rec in recs:
        assert rec.explanation and any(f"«{e.title[:40]}" in rec.explanation for e in rec.evidence)
    assert elapsed < 300


def test_text_profile_feeds_retrieval_as_a_lexical_query(tiny_settings: Settings, encoder: object) -> None:
    llm = tiny_settings.llm.model_copy(update={"backend": "fake", "profile_query_weight": 1.0, "candidates": 3})
    backend = FakeBackend().enqueue('{"profile": "documentary films about astronomy and the night sky"}')
    with Recommender(tiny_settings, encoder=encoder) as recommender:  # type: ignore[arg-type]
        plain = [r.item_id for r in recommender.recommend("bob", "films", 3)]
        result = recommender.recommend_explained("bob", "films", 3, backend, llm)
    ids = [r.item_id for r in result.recommendations]
    assert result.profile == "documentary films about astronomy and the night sky"
    assert "f7" in ids and "f7" not in plain  # "cosmos a spacetime odyssey": found through the profile
    assert len(ids) == len(set(ids)) == 3


def test_score_batch_with_rerank_returns_what_rerank_returns(tiny_settings: Settings, encoder: object) -> None:
    llm = tiny_settings.llm.model_copy(update={"backend": "fake", "rerank_weight": 0.5, "candidates": 6})
    settings = tiny_settings.model_copy(update={"llm": llm})
    with Recommender(settings, encoder=encoder) as recommender:  # type: ignore[arg-type]
        users = ["alice", "bob", "carol"]
        batch = recommender.score_batch(users, "films", k=3, rerank=True, backend=FakeBackend())
        plain = recommender.score_batch(users, "films", k=3)
        single = [recommender.recommend_explained(u, "films", 3, FakeBackend(), llm, explain=False) for u in users]
    assert batch.user_ids == users
    assert batch.item_ids == [[r.item_id for r in s.recommendations] for s in single]
    # the fake backend's scores are strong enough at w = 0.5 to change at least one list
    assert batch.item_ids != plain.item_ids
