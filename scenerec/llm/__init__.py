"""LLM backends behind one interface: `make_backend(settings.llm)` picks one by name."""

from .base import BackendNotInstalledError, LLMBackend, ModelLoadError, UnknownBackendError
from .registry import BACKENDS, backend_class, make_backend

__all__ = [
    "BACKENDS",
    "BackendNotInstalledError",
    "LLMBackend",
    "ModelLoadError",
    "UnknownBackendError",
    "backend_class",
    "make_backend",
]
