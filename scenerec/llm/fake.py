"""FakeBackend: a deterministic stand-in for unit tests of parsing and control flow. Not a model.

Answers come from a queue you `enqueue()` into; when the queue is empty, a chat answer is the smallest
value that satisfies the schema (or a fixed sentence), and a label score is a deterministic function of
the prompt's hash. Every call is recorded in `calls`, so tests can check what a prompt contained.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..settings import LLMSettings
from .base import Conversation, JSONSchema, LLMBackend

LabelScorer = Callable[[Conversation, Sequence[str]], dict[str, float]]


class FakeBackend(LLMBackend):
    """A scripted fake LLM (see the module docstring)."""

    name = "fake"
    supports_schema = True
    supports_labels = True
    batches = True

    def __init__(self, settings: LLMSettings | None = None) -> None:
        super().__init__(settings or LLMSettings(backend="fake"))
        self.answers: deque[str | Callable[[Conversation, JSONSchema | None], str]] = deque()
        self.label_scorer: LabelScorer = hashed_label_scores
        self.calls: list[dict[str, Any]] = []

    @property
    def model_name(self) -> str:
        return "fake"

    def enqueue(self, *answers: str | Callable[[Conversation, JSONSchema | None], str]) -> FakeBackend:
        """Queue answers (strings, or functions of the conversation and schema) for the next chats."""
        self.answers.extend(answers)
        return self

    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        self.calls.append({"kind": "chat", "messages": messages, "schema": schema})
        self.stats["calls"] += 1
        if self.answers:
            answer = self.answers.popleft()
            return answer(messages, schema) if callable(answer) else answer
        return json.dumps(minimal_instance(schema)) if schema is not None else "A fake answer."

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[str]
    ) -> list[dict[str, float]]:
        self.stats["calls"] += 1
        results = []
        for conversation in conversations:
            self.calls.append({"kind": "labels", "messages": conversation, "labels": list(labels)})
            results.append(self.label_scorer(conversation, labels))
        return results


def hashed_label_scores(conversation: Conversation, labels: Sequence[str]) -> dict[str, float]:
    """Log-probability-like numbers that depend only on the prompt text."""
    text = json.dumps(conversation, sort_keys=True)
    scores = {}
    for label in labels:
        digest = hashlib.sha256(f"{label}\0{text}".encode()).digest()
        scores[label] = -1.0 - digest[0] / 64.0
    return scores


def minimal_instance(schema: JSONSchema) -> Any:
    """The simplest value that satisfies the parts of JSON schema our prompts use."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_instance(properties[name]) for name in schema.get("required", properties)}
    if kind == "array":
        item = minimal_instance(schema.get("items", {"type": "string"}))
        return [item] * max(schema.get("minItems", 0), 1 if schema.get("items") else 0)
    if kind == "string":
        return "x" * max(schema.get("minLength", 0), 1)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
