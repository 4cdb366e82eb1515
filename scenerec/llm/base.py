"""The one small interface every LLM backend implements, and the errors it raises.

A backend turns chat messages into text (optionally constrained to a JSON schema) and, where it can, gives
the log-probability of short answer labels. Everything else — prompts, parsing, repair, ranking — lives
above it in `agent/rerank.py`, so a backend is a thin adaptor and a fake can stand in for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import BackendError, ScenerecError
from ..settings import LLMSettings

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
Conversation = list[Message]
JSONSchema = dict[str, Any]



def schemas_per_conversation(
    conversations: Sequence[Conversation], schemas: Sequence[JSONSchema | None] | None
) -> list[JSONSchema | None]:
    """`schemas` as a list with one entry (a schema or None) per conversation."""
    listed = list(schemas) if schemas is not None else [None] * len(conversations)
    if len(listed) != len(conversations):
        raise ValueError("one schema (or None) per conversation")
    return listed

class UnknownBackendError(BackendError):
    """No backend of that name is registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        super().__init__(f"unknown LLM backend '{name}' (known: {', '.join(known)})")


class BackendNotInstalledError(BackendError):
    """A backend's package is missing; the message says which extra to install."""


class ModelLoadError(BackendError):
    """A model could not be found, verified or loaded."""


class LLMBackend(ABC):
    """Chat completion, batched generation and label scoring over one model.

    Capability flags say what a backend can do, so callers pick a method instead of catching errors:
    `supports_schema` (decoding constrained to a JSON schema: the answer always parses), `supports_labels`
    (`score_labels` works), `batches` (`generate_batch` runs prompts together rather than one by one),
    `prefix_caching` (a prompt prefix shared between prompts is computed once), `batch_per_user`.
    """

    name: ClassVar[str]
    # class defaults; a backend whose abilities depend on its server (openai) sets them per instance
    supports_schema: bool = False
    supports_labels: bool = False
    batches: bool = False
    prefix_caching: bool = False
    # True when prefix reuse only works inside one call (the embedded backend): callers then send one
    # user's prompts per call instead of every user's at once
    batch_per_user: bool = False

    class Options(BaseModel):
        """Backend-specific options from `llm.options`; an unknown key is an error."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        try:
            self.options = self.Options(**settings.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise BackendError(f"invalid options for the {self.name} backend: {problems}") from exc
        self.stats: dict[str, float] = {"calls": 0, "prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0}

    @property
    def model_name(self) -> str:
        """A name for the model in reports and cache keys."""
        return self.settings.model or "default"

    @abstractmethod
    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        """The assistant's answer to `messages`; with `schema` (and `supports_schema`) it parses as one."""

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        schemas: Sequence[JSONSchema | None] | None = None,
        max_tokens: int | None = None,
    ) -> list[str]:
        """Answers to many conversations, in order; backends that batch run them together."""
        schemas = schemas_per_conversation(conversations, schemas)
        return [self.chat(c, schema=s, max_tokens=max_tokens) for c, s in zip(conversations, schemas)]

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[str]
    ) -> list[dict[str, float]]:
        """Per conversation, the log-probability of each label as the first token of the answer."""
        raise BackendError(f"the {self.name} backend cannot score labels")

    def close(self) -> None:
        """Release the model (and any server connection)."""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing_package(package: str, extra: str, backend: str) -> BackendNotInstalledError:
    """The error for a backend whose package is not installed."""
    return BackendNotInstalledError(
        f"the {backend} backend needs the '{package}' package: pip install 'scenerec[{extra}]'"
    )


__all__ = [
    "BackendError",
    "BackendNotInstalledError",
    "Conversation",
    "JSONSchema",
    "LLMBackend",
    "Message",
    "ModelLoadError",
    "ScenerecError",
    "UnknownBackendError",
    "missing_package",
]


class BatchingBackend(LLMBackend):
    """A backend whose unit of work is a batch (vLLM, the embedded model): one chat is a batch of one."""

    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        return self.generate_batch([messages], schemas=[schema], max_tokens=max_tokens)[0]

    @abstractmethod
    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        schemas: Sequence[JSONSchema | None] | None = None,
        max_tokens: int | None = None,
    ) -> list[str]:
        """Answers to many conversations, in order, decoded together."""
