"""`--backend vllm` end to end on the demo catalog, as a user runs it: `scenerec recommend --explain`,
`scenerec score --rerank` (every user of a batch in one engine call, prefix caching on) and the chat
agent, whose action JSON comes from vLLM's structured outputs.

`recommend --explain` runs as a real subprocess (`python -m scenerec`), which builds and loads its own
vLLM engine. `score --rerank` and the agent share the session's engine (conftest's `vllm_engine`): the
CLI runs in-process (click's CliRunner) and `make_backend` hands it that engine whenever the command asks
for the vllm backend, so the test suite pays one engine load less (60-90 s on 2 CPU cores). Everything
here needs the `make vllm` venv and carries the `vllm` marker.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import TypeAdapter

from scenerec.agent.conversation import Agent
from scenerec.cli import cli
from scenerec.llm.base import Conversation, JSONSchema, LLMBackend
from scenerec.models import Recommendation
from scenerec.paths import DataPaths
from scenerec.recommend.recommender import Recommender, pick_demo_user
from scenerec.settings import LLMSettings, Settings, load_settings
from scenerec.stores.session_store import SessionStore

pytestmark = [pytest.mark.vllm, pytest.mark.llm]
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


class SharedEngine:
    """The session's vLLM engine as a command gets it from `make_backend`: the same engine, whose
    `close()` leaves it running for the next test; every schema-constrained answer is recorded."""

    def __init__(self, engine: LLMBackend) -> None:
        self.engine = engine
        self.answers: list[tuple[JSONSchema | None, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        schemas: Sequence[JSONSchema | None] | None = None,
        max_tokens: int | None = None,
    ) -> list[str]:
        answers = self.engine.generate_batch(conversations, schemas=schemas, max_tokens=max_tokens)
        self.answers += list(zip(schemas or [None] * len(answers), answers))
        return answers

    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        return self.generate_batch([messages], schemas=[schema], max_tokens=max_tokens)[0]

    def close(self) -> None:
        pass

    def __enter__(self) -> SharedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture(scope="module")
def data(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private copy of the ingested demo catalog: these commands write text profiles and sessions."""
    copy = tmp_path_factory.mktemp("vllm-cli") / "data"
    shutil.copytree(demo_settings.data_dir, copy)
    return load_settings(data_dir=copy)


@pytest.fixture(scope="module")
def demo_user(data: Settings) -> tuple[str, str, list[str]]:
    """The demo user `scenerec demo` picks, the scene, and their history titles."""
    with Recommender(data) as recommender:
        user_id, scene = pick_demo_user(recommender)
        titles = [e.title for e in recommender.history(user_id).entries]
    return user_id, scene, titles


@pytest.fixture
def shared(vllm_engine: LLMBackend, monkeypatch: pytest.MonkeyPatch) -> SharedEngine:
    engine = SharedEngine(vllm_engine)

    def make_backend(settings: LLMSettings) -> SharedEngine:
        assert settings.backend == "vllm", f"the command asked for {settings.backend}, not vllm"
        return engine

    monkeypatch.setattr("scenerec.llm.make_backend", make_backend)
    monkeypatch.setattr("scenerec.recommend.recommender.make_backend", make_backend)
    return engine


def cli_run(*args: str, data: Settings, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(
        cli, [*args, "--data-dir", str(data.data_dir)], env={**VLLM_ENV, **(env or {})}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def assert_cites_history_or_falls_back(rec: Recommendation, history_titles: list[str]) -> None:
    assert rec.explanation, rec.item_id
    if rec.explanation.startswith("Among the most bought"):
        return
    cited = re.findall(r"«([^»]*)»", rec.explanation)
    assert cited, f"{rec.item_id}: the explanation cites nothing: {rec.explanation!r}"
    for quote in cited:
        assert any(t.startswith(quote.rstrip("…")) for t in history_titles), (quote, rec.explanation)


def test_recommend_explain_with_the_vllm_backend(
    data: Settings, demo_user: tuple[str, str, list[str]], vllm_engine: LLMBackend
) -> None:
    """A real `python -m scenerec recommend --explain --backend vllm`: its own engine, start to exit."""
    user_id, scene, titles = demo_user
    common = ["--user", user_id, "--scene", scene, "--json", "--data-dir", str(data.data_dir)]
    env = {
        **os.environ,
        **VLLM_ENV,
        "SCENEREC_LLM__CACHE_DIR": str(vllm_engine.settings.cache_dir),  # the converted model folder
        "SCENEREC_LLM__RERANK_WEIGHT": "0.3",  # label scores too, not only explanations
        "SCENEREC_LLM__OPTIONS": json.dumps({"max_model_len": 2048}),
    }
    with Recommender(data) as recommender:  # what `recommend -k 20` without --explain lists
        retrieved = [r.item_id for r in recommender.recommend(user_id, scene, 20)]
    out = subprocess.run(
        [sys.executable, "-m", "scenerec", "recommend", *common, "-k", "5", "--explain", "--backend", "vllm"],
        check=False, capture_output=True, text=True, timeout=400, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    recs = TypeAdapter(list[Recommendation]).validate_json(out.stdout)
    ids = [r.item_id for r in recs]
    assert len(ids) == len(set(ids)) == 5 and set(ids) <= set(retrieved)  # reranked from the 20 retrieved
    assert all(r.scene == scene for r in recs)
    for rec in recs:
        assert_cites_history_or_falls_back(rec, titles)


def test_score_rerank_sends_each_batch_to_the_engine_at_once(
    data: Settings, demo_user: tuple[str, str, list[str]], shared: SharedEngine, tmp_path: Path
) -> None:
    _, scene, _ = demo_user
    with Recommender(data) as recommender:
        users = [u for u in recommender.items.users() if recommender.history(u).entries][:8]
        owned = {u: set(recommender.history(u).item_ids) for u in users}
    users_file = tmp_path / "users.txt"
    users_file.write_text("\n".join(users) + "\n")
    out = tmp_path / "scores.csv"
    before = dict(shared.engine.stats)
    printed = cli_run(
        "score", "--scene", scene, "--users", str(users_file), "-k", "5", "--out", str(out),
        "--batch-size", "4", "--rerank", data=data,
        env={"SCENEREC_LLM__BACKEND": "vllm", "SCENEREC_LLM__RERANK_WEIGHT": "0.3"},
    )
    assert f"scored {len(users)} users in '{scene}'" in printed
    calls = shared.engine.stats["calls"] - before["calls"]
    # per batch of 4 users: one call writes their text profiles, one scores all 4 x 20 candidates
    assert calls == 2 * 2, calls
    assert shared.engine.stats["cached_prompt_tokens"] > before["cached_prompt_tokens"]  # prefix caching
    rows = list(csv.DictReader(out.open()))
    by_user: dict[str, list[str]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row["item_id"])
    assert sorted(by_user) == sorted(users)
    with Recommender(data) as recommender:
        for user_id, ids in by_user.items():
            assert len(ids) == len(set(ids)) == 5
            assert not set(ids) & owned[user_id]  # nothing the user already has
            assert all(item.scene == scene for item in recommender.items.get_items(ids).values())


def test_the_chat_agent_reads_messages_through_vllm_structured_outputs(
    data: Settings, demo_user: tuple[str, str, list[str]], shared: SharedEngine
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    user_id, scene, _ = demo_user
    with Recommender(data) as recommender, SessionStore(DataPaths(data.data_dir).sessions_db) as store:
        agent = Agent(recommender, store, data.tui, shared)  # type: ignore[arg-type]
        session = agent.start(user_id, scene)
        messages = ("something for a beginner please", "why the second one")
        replies = [agent.turn(session, text) for text in messages]
        found = recommender.items.get_items([r.item_id for r in replies[0].recommendations])
        scene_ids = {i for i, item in found.items() if item.scene == scene}
    assert agent.backend_error is None
    asked = [(s, a) for s, a in shared.answers if s and "action" in s.get("properties", {})]
    assert asked, "the agent never asked the engine for an action"
    for schema, answer in asked:  # structured outputs: every answer is JSON of the action schema
        jsonschema.validate(json.loads(answer), schema)
    first = replies[0]
    assert first.error is None and first.recommendations and first.scene == scene
    assert len({r.item_id for r in first.recommendations}) == len(first.recommendations)
    assert {r.item_id for r in first.recommendations} <= scene_ids
    # the model's action is used unless it means nothing for the message (then the rules answer)
    assert first.path == "llm" or first.parse_counts.get("llm_unusable", 0) >= 1, first.parse_counts
    shown = json.loads(cli_run("sessions", "show", session.session_id, "--json", data=data))
    assert [t["path"] for t in shown["turns"]][-2:] == [r.path for r in replies]  # what a user can look up
