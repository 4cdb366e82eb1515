"""llama.cpp in-process through llama-cpp-python — an optional extra for people who already have it.

`pip install 'scenerec[llamacpp]'` builds llama-cpp-python from source (PyPI has no wheels; the build
took over 35 minutes on 2 cores here), so it is never the default. llama.cpp loads a GGUF in well under a
second and generates fast, but its JSON-schema grammar is checked against the whole vocabulary for each
token (45-120 ms a token measured for 150k-262k vocabularies), so constrained answers are slow on big
vocabularies. Label scoring is not offered: rerank falls back to the schema-constrained ordering.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import Field

from ..settings import LLMSettings
from .base import Conversation, JSONSchema, LLMBackend, ModelLoadError, missing_package
from .model_files import resolve_model


class LlamaCppBackend(LLMBackend):
    """A GGUF file (default: the embedded SmolLM2-135M-Instruct) run by llama.cpp."""

    name = "llamacpp"
    supports_schema = True

    class Options(LLMBackend.Options):
        n_ctx: int = Field(4096, ge=256, description="Context length in tokens.")
        threads: int | None = Field(None, ge=1, description="CPU threads; None uses every core.")
        n_gpu_layers: int = Field(0, description="Layers offloaded to a GPU (-1: all).")

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        self.source = resolve_model(settings.model)
        if self.source.kind != "gguf":
            raise ModelLoadError("the llamacpp backend reads GGUF files only; give a .gguf path with -m")
        self._llama: Any = None

    @property
    def model_name(self) -> str:
        return self.source.name

    def load(self) -> None:
        if self._llama is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise missing_package("llama-cpp-python", "llamacpp", self.name) from exc
        o = self.options
        self._llama = Llama(
            model_path=str(self.source.path),
            n_ctx=o.n_ctx,
            n_threads=o.threads or os.cpu_count(),
            n_gpu_layers=o.n_gpu_layers,
            verbose=False,
        )

    def close(self) -> None:
        self._llama = None

    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        self.load()
        start = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        response = self._llama.create_chat_completion(
            messages=messages, max_tokens=max_tokens or self.settings.max_tokens, temperature=0.0, **kwargs
        )
        self.stats["calls"] += 1
        self.stats["seconds"] += time.perf_counter() - start
        usage = response.get("usage") or {}
        self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
        self.stats["generated_tokens"] += usage.get("completion_tokens", 0)
        return response["choices"][0]["message"].get("content") or ""
