"""Prompt templates as files, rendered with Jinja2; untrusted text goes in through the `q` filter only.

Every conversation is [system, user] where the user message is the per-user context (history, profile)
followed by the task. Everything one user's calls share therefore comes first, so a backend with prefix
caching computes it once. The `data` filter is `q` for catalog text, which it withholds when it reads
like an instruction (`text_safety.reads_like_instruction`). The `q` filter makes catalog and user text safe to quote between « »: control
characters and escape sequences dropped (`text_safety.printable`), the guillemets that delimit it
replaced, whitespace collapsed to one line, and the length capped.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2

from ..text_safety import printable, reads_like_instruction

DEFAULT_LIMIT = 120
WITHHELD = "(text withheld: it reads like an instruction)"


def quote(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """Untrusted text as one line that cannot close its « » delimiters, at most `limit` characters."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    flat = " ".join(printable(text).replace("«", '"').replace("»", '"').split())
    return printable(flat, max_length=limit)


def quote_data(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """`quote`, but catalog text that reads like an instruction to the model is replaced by WITHHELD."""
    if isinstance(text, str) and reads_like_instruction(text):
        return WITHHELD
    return quote(text, limit)


def _source(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_source),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["q"] = quote
    env.filters["data"] = quote_data
    return env


def render(name: str, **values: Any) -> str:
    """Render template `name` (e.g. "score_item.j2") with `values`; a missing value is an error."""
    return _environment().get_template(name).render(**values).strip()


def text(name: str) -> str:
    """A plain-text prompt file (e.g. "system.txt")."""
    return _source(name).strip()


@lru_cache(maxsize=1)
def example_answers() -> frozenset[str]:
    """The text fields of the worked examples in system.txt: a small model tends to copy them."""
    import json
    import re

    found = set()
    for match in re.finditer(r"Answer: (\{.*\})", text("system.txt")):
        try:
            values = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        found.update(v for v in values.values() if isinstance(v, str) and len(v) > 8)
    return frozenset(found)


TEMPLATES = (
    "system.txt",
    "user_context.j2",
    "score_item.j2",
    "explain_item.j2",
    "rank_order.j2",
    "profile.j2",
    "retry.j2",
)


@lru_cache(maxsize=1)
def version() -> str:
    """A hash of every template: part of the key of cached LLM outputs (profiles)."""
    digest = hashlib.sha256()
    for name in TEMPLATES:
        digest.update(_source(name).encode("utf-8"))
    return digest.hexdigest()[:16]
