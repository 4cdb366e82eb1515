"""Backend name -> (module, class), imported only when that backend is asked for."""

from __future__ import annotations

import importlib

from ..settings import LLMSettings
from .base import LLMBackend, UnknownBackendError

BACKENDS: dict[str, tuple[str, str]] = {
    "transformers": ("scenerec.llm.transformers_backend", "TransformersBackend"),
    "vllm": ("scenerec.llm.vllm_backend", "VLLMBackend"),
    "openai": ("scenerec.llm.openai_backend", "OpenAIBackend"),
    "llamacpp": ("scenerec.llm.llamacpp_backend", "LlamaCppBackend"),
    "fake": ("scenerec.llm.fake", "FakeBackend"),
}


def backend_class(name: str) -> type[LLMBackend]:
    """The class registered under `name` (its module is imported now, its heavy packages later)."""
    try:
        module_name, class_name = BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(name, sorted(BACKENDS)) from None
    return getattr(importlib.import_module(module_name), class_name)


def make_backend(settings: LLMSettings) -> LLMBackend:
    """The backend `settings.backend` names, built from its settings (the model loads on first use)."""
    return backend_class(settings.backend)(settings)
