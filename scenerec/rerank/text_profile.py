"""The transferred text profile, and the per-user prompt context every LLM call starts with.

From a user's history in the *other* scenes the LLM writes one sentence about what they would look for in
the target scene. It is stored with the hash of exactly what the model saw (history lines, scene, model,
prompt templates) and reused until any of that changes. It is context for the rerank prompts and an extra
lexical query for retrieval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import prompts
from ..llm.base import BackendError, Conversation, LLMBackend
from ..models import HistoryEntry, UserHistory
from ..settings import LLMSettings
from ..stores.text_profile_store import StoredTextProfile, TextProfileStore
from ..text_safety import reads_like_instruction
from .parsing import clean_field, parse_json_object

PROFILE_CHARS = 200


@dataclass(frozen=True)
class HistoryLine:
    """A history item as a prompt shows it: a short alias (h1, h2 …) the model cites it by."""

    alias: str
    entry: HistoryEntry


@dataclass
class UserContext:
    """The shared start of one user's prompts."""

    lines: list[HistoryLine]
    profile: str | None = None
    _text: str | None = field(default=None, repr=False)

    @property
    def by_alias(self) -> dict[str, HistoryEntry]:
        return {line.alias: line.entry for line in self.lines}

    @property
    def alias_of(self) -> dict[str, str]:
        return {line.entry.item_id: line.alias for line in self.lines}

    def text(self, item_chars: int) -> str:
        if self._text is None:
            history = [
                {
                    "alias": ln.alias,
                    "title": prompts.quote_data(ln.entry.title, item_chars),
                    "scene": ln.entry.scene,
                }
                for ln in self.lines
            ]
            self._text = prompts.render("user_context.j2", history=history, profile=self.profile)
        return self._text

    def conversation(self, task: str, item_chars: int) -> Conversation:
        """[system, user]: the constant system text, then this user's context, then the task."""
        return [
            {"role": "system", "content": prompts.text("system.txt")},
            {"role": "user", "content": f"{self.text(item_chars)}\n\n{task}"},
        ]


def history_lines(
    history: UserHistory, limit: int, *, must_include: Sequence[str] = (), outside_scene: str | None = None
) -> list[HistoryLine]:
    """The most recent `limit` history items (only those outside `outside_scene`, when given), plus the
    items in `must_include` (evidence to cite), oldest first, numbered h1, h2 …"""
    entries = history.outside_scene(outside_scene) if outside_scene else list(history.entries)
    chosen: dict[str, HistoryEntry] = {}
    for entry in reversed(entries):
        if len(chosen) == limit:
            break
        chosen.setdefault(entry.item_id, entry)
    wanted = set(must_include)
    for entry in history.entries:
        if entry.item_id in wanted:
            chosen.setdefault(entry.item_id, entry)
    ordered = sorted(chosen.values(), key=lambda e: e.position)
    return [HistoryLine(f"h{i}", e) for i, e in enumerate(ordered, start=1)]


@dataclass
class TextProfileOutcome:
    text: str | None
    cached: bool = False
    failed: bool = False


class TextProfiler:
    """Writes transferred text profiles, reusing stored ones while their inputs are unchanged."""

    def __init__(self, backend: LLMBackend, settings: LLMSettings, store: TextProfileStore | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.store = store

    def inputs_hash(self, context: UserContext, scene: str) -> str:
        """Hash of everything the model sees and is: the history lines, scene, model and templates."""
        payload = {
            "lines": [(ln.alias, ln.entry.item_id, ln.entry.title, ln.entry.scene) for ln in context.lines],
            "scene": scene,
            "model": self.backend.model_name,
            "prompts": prompts.version(),
            "item_chars": self.settings.item_chars,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def context_for(self, history: UserHistory, scene: str) -> UserContext:
        return UserContext(history_lines(history, self.settings.history_items, outside_scene=scene))

    def profiles(self, requests: Sequence[tuple[str, UserHistory, str]]) -> list[TextProfileOutcome]:
        """Profiles for (subject, history, scene) requests: stored ones reused, the rest written in a batch."""
        outcomes: list[TextProfileOutcome | None] = []
        pending: list[tuple[int, str, str, str, UserContext]] = []
        for index, (subject, history, scene) in enumerate(requests):
            context = self.context_for(history, scene)
            if not context.lines:
                outcomes.append(TextProfileOutcome(None))
                continue
            digest = self.inputs_hash(context, scene)
            stored = self.store.get(subject, scene, self.backend.model_name, digest) if self.store else None
            if stored is not None:
                outcomes.append(TextProfileOutcome(stored or None, cached=True, failed=not stored))
                continue
            outcomes.append(None)
            pending.append((index, subject, scene, digest, context))
        if pending:
            conversations = [
                ctx.conversation(prompts.render("profile.j2", scene=scene), self.settings.item_chars)
                for _, _, scene, _, ctx in pending
            ]
            schema = profile_schema()
            try:
                answers = self.backend.generate_batch(
                    conversations, schemas=[schema] * len(pending), max_tokens=self.settings.max_tokens
                )
            except BackendError:
                answers = [""] * len(pending)
            for (index, subject, scene, digest, _), answer in zip(pending, answers):
                text = read_profile(answer)
                outcomes[index] = TextProfileOutcome(text, failed=text is None)
                if self.store is not None:
                    self.store.put(
                        StoredTextProfile(
                            subject=subject,
                            scene=scene,
                            model=self.backend.model_name,
                            inputs_hash=digest,
                            profile=text or "",
                        )
                    )
        return [o if o is not None else TextProfileOutcome(None, failed=True) for o in outcomes]


def profile_schema() -> dict:
    return {
        "type": "object",
        "properties": {"profile": {"type": "string", "minLength": 10, "maxLength": PROFILE_CHARS}},
        "required": ["profile"],
        "additionalProperties": False,
    }


def read_profile(answer: str) -> str | None:
    """The profile sentence from a model answer, or None when it is missing, too short or unsafe."""
    value, _ = parse_json_object(answer)
    text, _ = clean_field((value or {}).get("profile"), PROFILE_CHARS)
    if len(text.split()) < 3 or reads_like_instruction(text) or text in prompts.example_answers():
        return None
    return text
