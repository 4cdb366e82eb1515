"""Reading model output that may be broken: lenient JSON, truncation repair, injection-like text.

Nothing here raises on bad input: every function returns None or a cleaned value, and the caller counts
what it had to repair.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..text_safety import printable

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)

def close_truncated(text: str) -> str:
    """`text` with an open string, object and array closed, so JSON cut off by a token limit parses."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    repaired = text
    if escaped:
        repaired = repaired[:-1]
    if in_string:
        repaired += '"'
    repaired = re.sub(r"[,:]\s*$", "", repaired.rstrip())
    if repaired.endswith(('{"', '["')):
        repaired = repaired[:-1]
    return repaired + "".join(reversed(stack))


def parse_json_object(text: str) -> tuple[dict[str, Any] | None, bool]:
    """The first JSON object in `text` and whether it had to be repaired; (None, False) if none."""
    if not isinstance(text, str):
        return None, False
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        return None, False
    body = text[start:]
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
        return (value, False) if isinstance(value, dict) else (None, False)
    except (json.JSONDecodeError, RecursionError):
        pass
    candidate = close_truncated(body)
    for attempt in (candidate, _drop_last_member(candidate)):
        if attempt is None:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            return value, True
    return None, False


def _drop_last_member(text: str) -> str | None:
    """Cut back to the last comma at the top level of the outer object and close it again."""
    cut = text.rfind(",")
    if cut <= 0:
        return None
    return close_truncated(text[:cut])


def clean_field(value: Any, limit: int) -> tuple[str, bool]:
    """A model-written text field as one printable line of at most `limit` characters; was it cut?"""
    if not isinstance(value, str):
        return "", False
    text = " ".join(printable(value).replace("«", '"').replace("»", '"').split())
    if len(text) <= limit:
        return text, False
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(",;:- ") + "…", True


# --- the JSON schemas answers are constrained to (where the backend decodes by schema) ---


def order_schema(aliases: Sequence[str]) -> dict:
    """The answer to an ordering task: every candidate alias once."""
    return {
        "type": "object",
        "properties": {
            "order": {
                "type": "array",
                "items": {"enum": list(aliases)},
                "minItems": len(aliases),
                "maxItems": len(aliases),
            }
        },
        "required": ["order"],
        "additionalProperties": False,
    }


def explain_schema(allowed: Sequence[str], chars: int) -> dict:
    """The answer to an explanation task: a cited history alias and a reason of at most `chars`."""
    return {
        "type": "object",
        "properties": {
            "because": {"enum": list(allowed)},
            "reason": {"type": "string", "minLength": 10, "maxLength": chars},
        },
        "required": ["because", "reason"],
        "additionalProperties": False,
    }
