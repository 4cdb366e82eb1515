"""Reading one chat message as an action: the model's answer (JSON decoded against the action schema)
checked against the message, and the rule-based parser that stands in when the model is missing or its
answer is unusable (tiny models often answer with valid JSON that means nothing).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from .. import prompts
from ..errors import ScenerecError
from ..llm.base import LLMBackend
from ..settings import TUISettings
from ..text_safety import printable
from .actions import (
    CONSTRAINT_CHARS,
    MAX_ITEM_IDS,
    NEEDS_ITEMS,
    STOPWORDS,
    ActionContext,
    AgentAction,
    action_schema,
)

Path_ = Literal["llm", "rules", "key"]


# --- the model's answer ---


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def parse_model_answer(raw: str, message: str, context: ActionContext) -> AgentAction | None:
    """The model's answer as an action, or None when it is unusable.

    Unusable: not JSON, not the schema, a scene or item that is not there, an action without what it
    needs, or a constraint / user id that is not in the message (a small model's invention).
    """
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
        action = AgentAction.model_validate(data)
    except (ValueError, ValidationError, TypeError):
        return None
    if action.scene is not None and action.scene not in context.scenes:
        return None
    if any(i not in context.shown_ids for i in action.item_ids) or len(action.item_ids) > MAX_ITEM_IDS:
        return None
    if action.action in NEEDS_ITEMS and not action.item_ids:
        return None
    if action.action == "switch_scene" and (action.scene is None or action.scene == context.scene):
        return None
    if action.action == "pick_user" and (not action.user_id or action.user_id.lower() not in message.lower()):
        return None
    if action.action == "refine" and not (action.constraint or "").strip():
        return None
    if action.constraint:
        if not _words(action.constraint) & _words(message):
            return None
        action = action.model_copy(
            update={"constraint": printable(action.constraint).strip()[:CONSTRAINT_CHARS]}
        )
    return action


# --- the rule-based parser ---

_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "top": 1,
}
_GREETING = re.compile(
    r"^\s*(hi|hello|hey|yo|thanks|thank you|thx|ok|okay|cool|great|nice|bye|good (morning|evening)|help|\?+)"
    r"\b[\s!.?]*$|^\s*[?!.]*\s*$",
    re.IGNORECASE,
)
_HELP = re.compile(r"^\s*(help|what can you do|how does (this|it) work)\b", re.IGNORECASE)
_WHY = re.compile(r"\b(why|explain|reason|how come)\b", re.IGNORECASE)
_MORE_LIKE = re.compile(
    r"\b(more like|similar to|similar|like that|like this|something like)\b", re.IGNORECASE
)
_EXCLUDE = re.compile(
    r"\b(hide|remove|exclude|drop|dislike|don'?t like|do not like|not interested|no to|skip|hate)\b",
    re.IGNORECASE,
)
_USER = re.compile(r"\buser\s+(?:id\s+)?['\"]?([A-Za-z0-9_.:@-]{1,64})['\"]?", re.IGNORECASE)
_RECOMMEND = re.compile(
    r"\b(recommend|suggest|suggestions?|recommendations?|show me|what should|ideas?|start over|reset|"
    r"anything|what else|new list|again)\b",
    re.IGNORECASE,
)
_REFINE = re.compile(
    r"\b(cheaper|smaller|bigger|larger|simpler|but|only|instead|rather|not|no|without|less|more|for an?|"
    r"with)\b",
    re.IGNORECASE,
)
_NUMBER_REF = re.compile(r"(?:#|\bno\.?\s*|\bnumber\s+|\bitem\s+|\bcard\s+)?\b(\d{1,2})\b")


def item_references(text: str, context: ActionContext) -> list[str]:
    """Shown items a message points at: '#2', 'number 3', 'the second', 'the last', 'this one'."""
    shown = context.shown_ids
    refs: list[str] = []

    def add(position: int) -> None:
        if 1 <= position <= len(shown) and shown[position - 1] not in refs:
            refs.append(shown[position - 1])

    lowered = text.lower()
    for match in _NUMBER_REF.finditer(lowered):
        add(int(match.group(1)))
    for word, position in _ORDINALS.items():
        if re.search(rf"\b{word}\b", lowered):
            add(position)
    if re.search(r"\blast\b", lowered):
        add(len(shown))
    if not refs:
        # a title named in the message: two of its words, or every content word of a short message
        words = _words(lowered) - _COMMAND_WORDS
        best: list[tuple[int, str]] = []
        for item_id, title in context.shown:
            overlap = len(words & _words(title))
            if overlap >= 2 or (overlap and overlap == len(words)):
                best.append((overlap, item_id))
        best.sort(key=lambda b: -b[0])
        if best and (len(best) == 1 or best[0][0] > best[1][0]):
            refs.append(best[0][1])
    if not refs and re.search(r"\b(this|that|it|this one|that one|selected)\b", lowered):
        if context.selected in shown:
            refs.append(context.selected)  # type: ignore[arg-type]
        elif shown:
            refs.append(shown[0])
    return refs


_COMMAND_WORDS = frozenset(
    [
        "why",
        "explain",
        "reason",
        "how",
        "come",
        "more",
        "like",
        "similar",
        "hide",
        "remove",
        "exclude",
        "drop",
        "dislike",
        "don't",
        "dont",
        "do",
        "not",
        "interested",
        "skip",
        "hate",
        "no",
    ]
)


def scene_mentioned(text: str, context: ActionContext) -> str | None:
    """A scene named in the message (by its name or its name without a plural 's')."""
    lowered = text.lower()
    for scene in context.scenes:
        stem = scene.rstrip("s")
        pattern = (
            rf"\b({re.escape(scene)}|{re.escape(stem)})\b" if len(stem) >= 3 else rf"\b{re.escape(scene)}\b"
        )
        if re.search(pattern, lowered):
            return scene
    return None


def constraint_text(text: str, context: ActionContext) -> str:
    """The message minus request words, scene names and item references: what a refine is about."""
    cleaned = re.sub(
        r"\b(please|pls|can you|could you|i want|i need|i'd like|i would like|show me|give me|find me|"
        r"i'?m looking for|looking for|i am looking for|what about|how about|do you have|have you got|"
        r"recommend|suggest|something|some|anything|stuff|items?|ones?|maybe|instead|rather|only)\b",
        " ",
        text,
        flags=re.IGNORECASE,
    )
    for scene in context.scenes:
        cleaned = re.sub(
            rf"\b(in|from)\s+{re.escape(scene)}\b|\b{re.escape(scene)}\b", " ", cleaned, flags=re.IGNORECASE
        )
    cleaned = re.sub(r"#\d+", " ", cleaned)
    cleaned = re.sub(r"[^\w\s'-]", " ", cleaned)
    return " ".join(cleaned.split())[:CONSTRAINT_CHARS]


@dataclass
class RuleReading:
    """The rule parser's action, and whether a keyword made it certain (strong) or it is a default guess."""

    action: AgentAction
    strong: bool


def parse_rules(text: str, context: ActionContext) -> AgentAction:
    """The rule-based reading of a message; always returns an action (smalltalk when nothing fits)."""
    return read_rules(text, context).action


def read_rules(text: str, context: ActionContext) -> RuleReading:
    """`parse_rules` with how sure it is: a model answer that contradicts a strong reading is not used."""
    message = printable(text).strip()
    lowered = message.lower()
    if not message or _GREETING.match(message) or _HELP.match(message):
        return RuleReading(AgentAction(action="smalltalk"), True)
    user = _USER.search(message)
    if user and user.group(1).lower() not in STOPWORDS | {"profile", "history"}:
        return RuleReading(AgentAction(action="pick_user", user_id=user.group(1)), True)
    refs = item_references(message, context)
    if _WHY.search(message):
        return RuleReading(AgentAction(action="explain", item_ids=refs[:1] or context.shown_ids[:1]), True)
    if _MORE_LIKE.search(message):
        if refs:
            return RuleReading(AgentAction(action="more_like", item_ids=refs[:1]), True)
        rest = constraint_text(_MORE_LIKE.sub(" ", message), context)
        if rest:
            return RuleReading(AgentAction(action="more_like", constraint=rest), True)
    if _EXCLUDE.search(message) and refs:
        return RuleReading(AgentAction(action="exclude", item_ids=refs[:MAX_ITEM_IDS]), True)
    if (
        re.search(r"\b(not|no)\b", lowered)
        and refs
        and not constraint_text(
            re.sub(r"\b(not|no|the|one|this|that)\b", " ", _NUMBER_REF.sub(" ", lowered)), context
        )
    ):
        return RuleReading(AgentAction(action="exclude", item_ids=refs[:MAX_ITEM_IDS]), True)
    scene = scene_mentioned(message, context)
    constraint = constraint_text(message, context)
    if scene:
        leftover = " ".join(w for w in constraint.split() if w.lower() not in STOPWORDS | _MOVE_WORDS) or None
        if scene != context.scene:
            return RuleReading(AgentAction(action="switch_scene", scene=scene, constraint=leftover), True)
        if leftover is None:
            return RuleReading(AgentAction(action="recommend", scene=scene), False)
    if _RECOMMEND.search(message) and not _REFINE.search(message):
        words = _words(constraint) - _LIST_WORDS
        return RuleReading(
            AgentAction(action="recommend", scene=scene, constraint=constraint if words else None), False
        )
    if _words(constraint) - _LIST_WORDS:
        if not context.shown:
            return RuleReading(AgentAction(action="recommend", scene=scene, constraint=constraint), False)
        return RuleReading(AgentAction(action="refine", constraint=constraint), False)
    return RuleReading(AgentAction(action="recommend", scene=scene), False)


_MOVE_WORDS = frozenset({"switch", "go", "move", "change", "jump", "over", "back", "let", "lets", "s", "now"})
_LIST_WORDS = frozenset(
    {
        "recommendations",
        "recommendation",
        "suggestions",
        "suggestion",
        "ideas",
        "idea",
        "new",
        "list",
        "again",
        "else",
        "reset",
        "start",
        "over",
        "what",
        "should",
        "buy",
        "get",
    }
)




# --- the reader: rules first when certain, else the model, else the rules ---


class MessageReader:
    """Turns a message into an action with the model (when there is one) or the rules, counting which
    reader produced each action and why the model was not used in `parse_counts`."""

    def __init__(self, backend: LLMBackend | None, settings: TUISettings) -> None:
        self.backend = backend
        self.settings = settings
        self.parse_counts: Counter[str] = Counter()
        self.backend_error: str | None = None  # set when the backend failed; not retried

    def read(self, message: str, context: ActionContext) -> tuple[AgentAction, Path_]:
        """The message as an action, and which reader produced it.

        A keyword the rules are certain of ("why #2", "hide the first", "show me books") is not sent to
        the model: an answer that disagreed would be overruled anyway, and one that agreed adds nothing
        but seconds on a CPU. Everything else goes to the model first, then to the rules if the model is
        missing, fails, or answers something unusable.
        """
        rules = read_rules(message, context)
        reason = None
        if self.backend is None or not self.settings.llm_actions:
            reason = "llm_off"
        elif self.backend_error is not None:
            reason = "llm_unavailable"
        elif rules.strong:
            reason = "rules_certain"
        else:
            try:
                answer = self.backend.chat(
                    action_prompt(message, context),
                    schema=action_schema(context),
                    max_tokens=self.settings.action_max_tokens,
                )
            except ScenerecError as exc:  # BackendError, ModelNotAvailableError: not retried this run
                self.backend_error = str(exc)
                reason = "llm_unavailable"
            else:
                action = parse_model_answer(answer, message, context)
                if action is not None:
                    self.parse_counts["llm"] += 1
                    if action.action == "explain" and not action.item_ids:
                        action = action.model_copy(update={"item_ids": rules.action.item_ids})
                    return action, "llm"
                reason = "llm_unusable"
        self.parse_counts["rules"] += 1
        self.parse_counts[reason] += 1
        return rules.action, "rules"


def action_prompt(message: str, context: ActionContext) -> list[dict[str, str]]:
    """The conversation that asks the model for the message's action."""
    text = prompts.render(
        "agent_action.txt",
        scenes=list(context.scenes),
        scene=context.scene,
        shown=list(context.shown),
        message=message,
    )
    system, _, user = text.partition("\n---\n")
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]
