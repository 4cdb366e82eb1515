"""What the agent can do: the actions, the context a message is read against, the JSON schema the
model answers in, and constraints (a refine request as a query and banned words). `reading.py` turns
a message into one of these actions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

ActionName = Literal[
    "recommend", "refine", "more_like", "exclude", "explain", "switch_scene", "pick_user", "smalltalk"
]
ACTIONS: tuple[str, ...] = get_args(ActionName)
NEEDS_ITEMS = frozenset({"more_like", "exclude"})
CONSTRAINT_CHARS = 120
USER_ID_CHARS = 40  # with the other fields, a longest answer fits `action_max_tokens`
MAX_ITEM_IDS = 5


class AgentAction(BaseModel):
    """One thing the agent does for one message."""

    model_config = ConfigDict(extra="forbid")

    action: ActionName
    scene: str | None = Field(None, description="switch_scene: the scene to show; else the scene meant.")
    constraint: str | None = Field(
        None,
        max_length=CONSTRAINT_CHARS * 4,
        description="recommend/refine: what the items should be about ('for a child'); 'not X' excludes X.",
    )
    item_ids: list[str] = Field(default_factory=list, description="Items the action is about.")
    user_id: str | None = Field(None, description="pick_user: the user to continue as.")


@dataclass
class ActionContext:
    """What a message is read against: the scenes, the current scene and the list on screen."""

    scenes: Sequence[str]
    scene: str
    shown: Sequence[tuple[str, str]] = ()  # (item_id, title), in screen order
    selected: str | None = None  # the card the cursor is on, if any

    @property
    def shown_ids(self) -> list[str]:
        return [item_id for item_id, _ in self.shown]


def action_schema(context: ActionContext) -> dict[str, Any]:
    """The JSON schema the LLM's answer is decoded against: enums of the real scenes and shown ids."""
    properties: dict[str, Any] = {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "scene": {"type": "string", "enum": list(context.scenes)},
        "constraint": {"type": "string", "maxLength": CONSTRAINT_CHARS},
        "user_id": {"type": "string", "maxLength": USER_ID_CHARS},
    }
    if context.shown:
        properties["item_ids"] = {
            "type": "array",
            "items": {"type": "string", "enum": context.shown_ids},
            "maxItems": 3,
        }
    return {"type": "object", "properties": properties, "required": ["action"], "additionalProperties": False}


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "with",
        "for",
        "from",
        "is",
        "are",
        "be",
        "me",
        "my",
        "i",
        "you",
        "your",
        "it",
        "this",
        "that",
        "these",
        "those",
        "some",
        "something",
        "anything",
        "stuff",
        "things",
        "thing",
        "items",
        "item",
        "please",
        "pls",
        "can",
        "could",
        "would",
        "should",
        "show",
        "give",
        "find",
        "get",
        "want",
        "need",
        "like",
        "more",
        "less",
        "than",
        "also",
        "just",
        "only",
        "one",
        "ones",
        "any",
        "what",
        "which",
    ]
)


# --- constraints ---


@dataclass
class Constraint:
    """A refine request as a query (what to look for) and a filter (words a title must not contain)."""

    query: str = ""
    banned: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """'not paper', 'without glitter', 'no red' ban words; the rest is the query."""
        banned: list[str] = []

        def ban(match: re.Match[str]) -> str:
            words = [w for w in re.findall(r"[a-z0-9]+", match.group(2).lower()) if w not in STOPWORDS]
            banned.extend(w for w in words if len(w) >= 2 and w not in banned)
            return " "

        query = re.sub(
            r"\b(not|no|without|except|but not|excluding)\s+((?:[\w'-]+\s*){1,3})",
            ban,
            text,
            flags=re.IGNORECASE,
        )
        words = [w for w in re.findall(r"[\w'-]+", query.lower()) if w not in STOPWORDS and w != "but"]
        return cls(query=" ".join(words), banned=banned)

    def allows(self, title: str) -> bool:
        lowered = title.lower()
        return not any(re.search(rf"\b{re.escape(w)}", lowered) for w in self.banned)
