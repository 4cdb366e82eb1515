"""Any OpenAI-compatible server (vllm serve, llama.cpp's server, transformers serve, a hosted API).

Servers differ in how they take a JSON schema, so the backend speaks one of a few dialects:

- `openai` — `response_format={"type": "json_schema", "json_schema": {...}}` and `logprobs` (OpenAI,
  vLLM, most servers);
- `llamacpp` — llama.cpp's server rejects that and wants `{"type": "json_object", "schema": {...}}`;
- `plain` — no response format and no log-probabilities (`transformers serve` refuses both): the schema is
  described in the prompt and the answer is parsed and repaired like any other;
- `auto` (default) — `openai`, switching to `plain` for good when the server refuses a schema or
  log-probabilities, or silently ignores them (a schema answer that is not JSON, no logprobs returned).

Prompts of a batch are sent concurrently, so a server that batches (vLLM) runs them together and reuses
their shared prefix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field

from ..settings import LLMSettings
from .base import (
    BackendError,
    Conversation,
    JSONSchema,
    LLMBackend,
    missing_package,
    schemas_per_conversation,
)

Dialect = Literal["auto", "openai", "llamacpp", "plain"]


class OpenAIBackend(LLMBackend):
    """Chat completions against `llm.base_url` with `llm.api_key` (or OPENAI_API_KEY)."""

    name = "openai"
    supports_schema = True
    supports_labels = True
    batches = True
    prefix_caching = True  # the server's, where it has one

    class Options(LLMBackend.Options):
        dialect: Dialect = Field("auto", description="How the server takes a JSON schema (see the module).")
        timeout_s: float = Field(120.0, gt=0, description="Seconds per request.")
        concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
        top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives asked for when scoring labels.")

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        if not settings.base_url:
            raise BackendError("the openai backend needs llm.base_url (e.g. http://127.0.0.1:8000/v1)")
        if not settings.model:
            raise BackendError("the openai backend needs llm.model: the model name the server serves")
        try:
            import openai
        except ImportError as exc:
            raise missing_package("openai", "llm", self.name) from exc
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=self.options.timeout_s,
            max_retries=1,
        )
        self.dialect: Dialect = self.options.dialect
        self._apply_dialect()

    @property
    def model_name(self) -> str:
        return str(self.settings.model)

    def _apply_dialect(self) -> None:
        plain = self.dialect == "plain"
        self.supports_schema = not plain
        self.supports_labels = not plain

    # --- the interface ---

    def chat(
        self, messages: Conversation, *, schema: JSONSchema | None = None, max_tokens: int | None = None
    ) -> str:
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": max_tokens or self.settings.max_tokens,
            "temperature": 0.0,
        }
        if schema is not None:
            request = self._with_schema(request, schema)
        try:
            response = self.client.chat.completions.create(**request)
        except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as exc:
            if self.dialect == "auto" and schema is not None:
                self.dialect = "plain"  # the server refuses response_format: describe the schema instead
                self._apply_dialect()
                return self.chat(messages, schema=schema, max_tokens=max_tokens)
            raise BackendError(f"the server at {self.settings.base_url} refused the request: {exc}") from exc
        except self._openai.OpenAIError as exc:
            raise BackendError(f"the server at {self.settings.base_url} failed: {exc}") from exc
        self.stats["calls"] += 1
        if response.usage is not None:
            self.stats["prompt_tokens"] += response.usage.prompt_tokens or 0
            self.stats["generated_tokens"] += response.usage.completion_tokens or 0
        answer = response.choices[0].message.content or ""
        if self.dialect == "auto" and schema is not None and not _is_json(answer):
            # a server that honours json_schema always returns JSON; this one ignored it (transformers
            # serve accepts and drops response_format), so describe the schema in the prompt from now on
            self.dialect = "plain"
            self._apply_dialect()
            return self.chat(messages, schema=schema, max_tokens=max_tokens)
        return answer

    def generate_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        schemas: Sequence[JSONSchema | None] | None = None,
        max_tokens: int | None = None,
    ) -> list[str]:
        schemas = schemas_per_conversation(conversations, schemas)
        if not conversations:
            return []
        # the first request settles an `auto` dialect before the rest go out together
        first = self.chat(conversations[0], schema=schemas[0], max_tokens=max_tokens)
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            rest = pool.map(
                lambda pair: self.chat(pair[0], schema=pair[1], max_tokens=max_tokens),
                zip(conversations[1:], schemas[1:]),
            )
            return [first, *rest]

    def score_labels(
        self, conversations: Sequence[Conversation], labels: Sequence[str]
    ) -> list[dict[str, float]]:
        if not self.supports_labels:
            raise BackendError(f"the server at {self.settings.base_url} gives no log-probabilities")
        if not conversations:
            return []
        first = self._score_one(conversations[0], labels)  # settles an `auto` dialect before the rest
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            return [first, *pool.map(lambda c: self._score_one(c, labels), conversations[1:])]

    # --- internals ---

    def _with_schema(self, request: dict[str, Any], schema: JSONSchema) -> dict[str, Any]:
        if self.dialect in ("auto", "openai"):
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        elif self.dialect == "llamacpp":
            request["response_format"] = {"type": "json_object", "schema": schema}
        else:
            messages = [dict(m) for m in request["messages"]]
            messages[-1]["content"] += (
                "\nReply with only a JSON object, no other text, that follows this JSON schema: "
                + json.dumps(schema, separators=(",", ":"))
            )
            request["messages"] = messages
        return request

    def _score_one(self, conversation: Conversation, labels: Sequence[str]) -> dict[str, float]:
        try:
            response = self.client.chat.completions.create(
                model=self.model_name,
                messages=conversation,
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=self.options.top_logprobs,
            )
        except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as exc:
            if self.dialect == "auto":
                self.dialect = "plain"
                self._apply_dialect()
            raise BackendError(
                f"the server at {self.settings.base_url} gives no log-probabilities: {exc}"
            ) from exc
        except self._openai.OpenAIError as exc:
            raise BackendError(f"the server at {self.settings.base_url} failed: {exc}") from exc
        self.stats["calls"] += 1
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content:
            if self.dialect == "auto":  # the server drops `logprobs` silently (transformers serve)
                self.dialect = "plain"
                self._apply_dialect()
            raise BackendError(f"the server at {self.settings.base_url} returned no log-probabilities")
        alternatives: dict[str, float] = {}
        for alt in content[0].top_logprobs:  # "yes" and " yes" are one label
            token = alt.token.strip()
            alternatives[token] = max(alt.logprob, alternatives.get(token, -math.inf))
        floor = min(alternatives.values(), default=0.0) - 1.0  # a label outside the top-k: below all of them
        return {
            label: alternatives.get(label, floor) if math.isfinite(floor) else -math.inf for label in labels
        }


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False
    return True
