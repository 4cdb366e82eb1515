"""The conversational agent: one message in, one action, one reply out — usable without any UI.

`Agent.turn(session, text)` reads the message as an action (the LLM with a JSON schema, checked; the rule
parser when the model is missing or its answer unusable, and alone when a keyword makes it certain),
carries the action out against the Recommender, stores the turn, and returns a `Reply`. Likes join the
session's history (so the profile vector and the transferred text profile change), dislikes are
excluded for the session, refine texts steer retrieval (`steering.py`). Each turn works on a copy of the
session and is stored in one transaction; only then does the caller's session change.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import ScenerecError, UnknownSceneError, UnknownUserError
from ..llm.base import LLMBackend
from ..models import HistoryEntry, Item, Recommendation, UserHistory
from ..recommend.recommender import Recommender, pick_demo_user
from ..recommend.why import breakdown, breakdown_lines
from ..rerank.rephrase import evidence_sentence as typed_sentence
from ..settings import TUISettings
from ..stores.session_store import ChatSession, Feedback, SessionStore, TurnRecord
from ..text_safety import printable
from .actions import ACTIONS, ActionContext, AgentAction
from .reading import MessageReader, Path_
from .steering import Steering, steered_recommendations

MAX_MESSAGE_CHARS = 20_000  # stored; the parsers read the first PARSE_CHARS
PARSE_CHARS = 1_000
ListCallback = Callable[[list[Recommendation]], None]

HELP = (
    'Ask for recommendations ("recommend something", "show me office"), refine them ("cheaper", '
    '"for a child", "not paper"), or point at a card: "why #2", "more like 3", "hide the first". '
    "On the list: l like, d dislike, m more like this, w why, Enter details."
)


class ProfileView(BaseModel):
    """What the profile panel shows: history per scene, this session's likes and dislikes, wishes."""

    user_id: str
    scene: str
    history: dict[str, list[HistoryEntry]]
    liked: list[HistoryEntry] = Field(default_factory=list)
    disliked: list[str] = Field(default_factory=list, description="Titles excluded in this session.")
    constraints: list[str] = Field(default_factory=list)
    anchor: str | None = None
    text_profile: str | None = None


class Reply(BaseModel):
    """The agent's answer to one turn."""

    text: str
    action: AgentAction | None = Field(
        description="What was done; None for a like (a key press, not an action)."
    )
    path: Path_ = Field(
        description="What turned the message into the action: llm, rules, or key (a key press)."
    )
    session_id: str
    user_id: str
    scene: str
    recommendations: list[Recommendation] = Field(description="The list on screen after this turn.")
    list_changed: bool = False
    explained_by: Literal["llm", "template"] | None = None
    error: str | None = None
    text_profile: str | None = Field(
        None, description="The transferred text profile the LLM stage used, if any."
    )
    seconds: float = 0.0
    parse_counts: dict[str, int] = Field(
        default_factory=dict, description="llm / rules / why the LLM was not used."
    )


# an action's handler: (draft session, action, reader path, message, start time, list callback) -> reply
Handler = Callable[[ChatSession, AgentAction, Path_, str, float, "ListCallback | None"], Reply]


def shown(text: str, limit: int = 120) -> str:
    """Untrusted text (a title, a wish) as it may appear in a reply: no escapes, no control characters."""
    return printable(text, limit)


def _adopt(session: ChatSession, draft: ChatSession) -> None:
    """Copy a stored draft's state into the caller's session object (which the UI holds on to)."""
    for name in ChatSession.model_fields:
        setattr(session, name, getattr(draft, name))


def evidence_sentence(rec: Recommendation) -> str:
    """The template explanation, from the card's typed evidence (rerank/rephrase.py)."""
    return shown(typed_sentence(rec), 400)


class Agent:
    """Turns messages into actions on a Recommender, keeping each session's state in a SessionStore.

    start / resume a session; turn (a message), act (an action, e.g. from a key), like, dislike;
    history (stored history + likes), profile (what the profile panel shows), why, item, transcript.
    Thread-safe: calls are serialised by a lock, so a UI may call from worker threads.
    """

    def __init__(
        self,
        recommender: Recommender,
        store: SessionStore,
        settings: TUISettings | None = None,
        backend: LLMBackend | None = None,
    ) -> None:
        self.recommender = recommender
        self.store = store
        self.settings = settings or TUISettings()
        self.backend = backend
        self.reader = MessageReader(backend, self.settings)
        # action -> handler: who carries out each action a message can be read as
        self._handlers: dict[str, Handler] = {
            "smalltalk": self._do_smalltalk,
            "recommend": self._do_recommend,
            "refine": self._do_refine,
            "switch_scene": self._do_switch_scene,
            "more_like": self._do_more_like,
            "exclude": self._do_exclude,
            "explain": self._do_explain,
            "pick_user": self._do_pick_user,
        }
        assert set(self._handlers) == set(ACTIONS), "every action needs a handler"
        self._lock = threading.RLock()  # one action at a time: the UI calls from worker threads
        self._reranker = None
        self._text_profiles: dict[tuple[str, str, tuple[str, ...]], str | None] = {}

    @property
    def parse_counts(self) -> Counter[str]:
        """Which reader produced each action, and why the model was not used."""
        return self.reader.parse_counts

    @property
    def backend_error(self) -> str | None:
        """Why the backend is not used any more (it failed once); None while it works."""
        return self.reader.backend_error

    @backend_error.setter
    def backend_error(self, value: str | None) -> None:
        self.reader.backend_error = value

    # --- sessions ---

    def start(self, user_id: str | None = None, scene: str | None = None) -> ChatSession:
        """A new stored session (default: the demo user and their thinnest scene)."""
        with self._lock:
            if user_id is None:
                user_id, default_scene = pick_demo_user(self.recommender)
                scene = scene or default_scene
            history = self.recommender.history(user_id)  # UnknownUserError for an unknown id
            if scene is None:
                counts = history.scene_counts()
                scene = min(self.recommender.items.scenes(), key=lambda s: (counts.get(s, 0), s))
            self.recommender.check_scene(scene)
            return self.store.create(user_id, scene)

    def resume(self, session_id: str) -> ChatSession:
        """A stored session, as its last completed turn left it."""
        return self.store.load(session_id)

    def history(self, session: ChatSession) -> UserHistory:
        """The user's stored history plus this session's likes (newest last)."""
        base = self.recommender.history(session.user_id)
        known = set(base.item_ids)
        liked = [i for i in session.liked if i not in known]
        extra = self.recommender.items.history_from_ids(session.user_id, liked)
        offset = len(base.entries)
        entries = base.entries + [
            e.model_copy(update={"position": offset + e.position}) for e in extra.entries
        ]
        return UserHistory(user_id=session.user_id, entries=entries)

    def profile(self, session: ChatSession, *, text_profile: bool = False) -> ProfileView:
        """The profile panel's content; `text_profile` asks the LLM for it (cached while history is unchanged)."""
        with self._lock:
            base = self.recommender.history(session.user_id)
            by_scene: dict[str, list[HistoryEntry]] = {}
            for entry in base.entries:
                by_scene.setdefault(entry.scene, []).append(entry)
            liked = self.recommender.items.history_from_ids(session.user_id, session.liked).entries
            disliked = self.recommender.items.get_items(session.disliked)
            anchor = self.recommender.items.get_items([session.anchor]) if session.anchor else {}
            return ProfileView(
                user_id=session.user_id,
                scene=session.scene,
                history=by_scene,
                liked=liked,
                disliked=[disliked[i].title for i in session.disliked if i in disliked],
                constraints=list(session.constraints),
                anchor=anchor[session.anchor].title if session.anchor in anchor else None,
                text_profile=self._text_profile(session) if text_profile else None,
            )

    def item(self, item_id: str) -> Item | None:
        """An item's full record (for the details view). No lock: SQLite serialises the read, and the UI
        may call this while a turn is running."""
        return self.recommender.items.get_items([item_id]).get(item_id)

    def transcript(self, session: ChatSession) -> list[TurnRecord]:
        return self.store.turns(session.session_id)

    # --- turns ---

    def turn(
        self,
        session: ChatSession,
        text: str,
        *,
        selected: str | None = None,
        on_list: ListCallback | None = None,
    ) -> Reply:
        """One message: read it as an action, do it, store the turn, answer.

        `selected` is the card the cursor is on ("why this"); `on_list` is called with a new list as
        soon as retrieval has it, before the (slow) LLM explanations, so a UI can show cards early.
        """
        started = time.perf_counter()
        message = text[:MAX_MESSAGE_CHARS]
        with self._lock:
            context = self._context(session, selected)
            action, path = self.reader.read(printable(message[:PARSE_CHARS]), context)
            return self._act(session, action, path, message, started, on_list)

    def act(self, session: ChatSession, action: AgentAction, *, on_list: ListCallback | None = None) -> Reply:
        """Do an action directly (a key press: `m` more like this, `w` why, `d` dislike)."""
        with self._lock:
            return self._act(session, action, "key", "", time.perf_counter(), on_list)

    def like(self, session: ChatSession, item_id: str) -> Reply:
        """The item joins the session's history; the list stays, the profile changes."""
        started = time.perf_counter()
        with self._lock:
            item = self.item(item_id)
            action = None
            if item is None:
                return self._reply(
                    session, action, "key", f"No item {item_id!r}.", started, error="unknown item"
                )
            draft = session.model_copy(deep=True)
            if item_id not in draft.liked:
                draft.liked.append(item_id)
            if item_id in draft.disliked:
                draft.disliked.remove(item_id)
            text = f"Liked «{shown(item.title)}»: it joins your {item.scene} history for this session."
            reply = self._finish(
                draft,
                action,
                "key",
                "",
                text,
                started,
                feedback=[Feedback(item_id=item_id, kind="like")],
                record_action={"action": "like", "item_ids": [item_id]},
            )
            _adopt(session, draft)
            return reply

    def dislike(self, session: ChatSession, item_id: str) -> Reply:
        return self.act(session, AgentAction(action="exclude", item_ids=[item_id]))

    # --- reading a message ---

    def _context(self, session: ChatSession, selected: str | None) -> ActionContext:
        return ActionContext(
            scenes=self.recommender.items.scenes(),
            scene=session.scene,
            shown=[(r.item_id, r.title) for r in session.shown],
            selected=selected,
        )

    # --- doing it ---

    def _act(
        self,
        session: ChatSession,
        action: AgentAction,
        path: Path_,
        message: str,
        started: float,
        on_list: ListCallback | None,
    ) -> Reply:
        handler = self._handlers[action.action]
        # the turn works on a copy; the session changes only once the turn is stored
        draft = session.model_copy(deep=True)
        try:
            reply = handler(draft, action, path, message, started, on_list)
        except (UnknownUserError, UnknownSceneError) as exc:
            draft = session.model_copy(deep=True)
            reply = self._finish(
                draft, action, path, message, f"{shown(str(exc), 300)}.", started, error=str(exc)
            )
        _adopt(session, draft)
        return reply

    def _do_smalltalk(self, session, action, path, message, started, on_list) -> Reply:
        lowered = message.strip().lower()
        if lowered.startswith(("thank", "thx", "cool", "great", "nice", "ok")):
            text = "Glad it helps. " + HELP
        else:
            text = f"Hi! You are {session.user_id}, looking at {session.scene}. " + HELP
        return self._finish(session, action, path, message, text, started)

    def _do_recommend(self, session, action, path, message, started, on_list) -> Reply:
        if action.scene and action.scene != session.scene:
            self.recommender.check_scene(action.scene)
            session.scene = action.scene
        session.constraints = [action.constraint] if action.constraint else []
        session.anchor = None
        return self._new_list(session, action, path, message, started, on_list)

    def _do_refine(self, session, action, path, message, started, on_list) -> Reply:
        if action.constraint and action.constraint not in session.constraints:
            session.constraints.append(action.constraint)
        return self._new_list(session, action, path, message, started, on_list)

    def _do_switch_scene(self, session, action, path, message, started, on_list) -> Reply:
        scene = action.scene or session.scene
        self.recommender.check_scene(scene)
        session.scene = scene
        session.constraints = [action.constraint] if action.constraint else []
        session.anchor = None
        return self._new_list(session, action, path, message, started, on_list)

    def _do_more_like(self, session, action, path, message, started, on_list) -> Reply:
        anchor = action.item_ids[0] if action.item_ids else None
        if anchor is None and action.constraint:
            hits = self.recommender.search_items(action.constraint, k=1)
            anchor = hits[0].item_id if hits else None
        if anchor is None or self.item(anchor) is None:
            return self._finish(session, action, path, message, 'Which item? Say "more like #2".', started)
        session.anchor = anchor
        session.constraints = []
        action = action.model_copy(update={"item_ids": [anchor]})
        return self._new_list(session, action, path, message, started, on_list)

    def _do_exclude(self, session, action, path, message, started, on_list) -> Reply:
        ids = [i for i in action.item_ids if self.item(i) is not None]
        if not ids:
            return self._finish(session, action, path, message, 'Which item? Say "hide #2".', started)
        for item_id in ids:
            if item_id not in session.disliked:
                session.disliked.append(item_id)
            if item_id in session.liked:
                session.liked.remove(item_id)
        titles = [self.item(i).title for i in ids]  # type: ignore[union-attr]
        before = len(session.shown)
        session.shown = [r for r in session.shown if r.item_id not in ids]
        text = "Hidden " + ", ".join(f"«{shown(t)}»" for t in titles) + " for this session."
        return self._finish(
            session,
            action,
            path,
            message,
            text,
            started,
            list_changed=len(session.shown) != before,
            feedback=[Feedback(item_id=i, kind="dislike") for i in ids],
        )

    def _do_explain(self, session, action, path, message, started, on_list) -> Reply:
        ids = action.item_ids or [r.item_id for r in session.shown[:1]]
        card = next((r for r in session.shown if ids and r.item_id == ids[0]), None)
        if card is None:
            return self._finish(session, action, path, message, "There is no list yet to explain.", started)
        return self._finish(session, action, path, message, self.why(session, card), started)

    def _do_pick_user(self, session, action, path, message, started, on_list) -> Reply:
        user_id = action.user_id or ""
        self.recommender.history(user_id)  # raises UnknownUserError, answered as an error reply
        session.user_id = user_id
        session.liked, session.disliked, session.constraints, session.anchor = [], [], [], None
        return self._new_list(
            session, action, path, message, started, on_list, intro=f"Now recommending for {user_id}."
        )

    def why(self, session: ChatSession, card: Recommendation) -> str:
        """The full reasoning for a card: the explanation, its evidence, and what the session asked for."""
        rank = next((n for n, r in enumerate(session.shown, start=1) if r.item_id == card.item_id), None)
        lines = [
            f"«{shown(card.title)}» ({card.scene}{f', #{rank}' if rank else ''}, score {card.score:.4f})"
        ]
        lines.append(shown(card.explanation or evidence_sentence(card), 400))
        if card.evidence and card.source != "popular":
            # the bars: every history item that raised the card's score, by leave-one-out
            # a liked card is in the session history now; it cannot explain itself, and the card's
            # sentence was written before the like, so the bars use the history without it
            history = self.history(session)
            history = history.model_copy(
                update={"entries": [e for e in history.entries if e.item_id != card.item_id]}
            )
            found = breakdown(self.recommender, history, card.scene, card.item_id)
            lines.append("What drove it, ranked by " + found.method + ":")
            lines += [shown(line, 200) for line in breakdown_lines(found)[1:-1]]
        elif card.source == "popular":
            lines.append(
                "You have no history to go on, so this is among the most popular items of the scene."
            )
        if session.anchor:
            anchor = self.item(session.anchor)
            if anchor is not None:
                lines.append(f"The list is built around «{shown(anchor.title)}» (more like this).")
        if session.constraints:
            lines.append("You asked for: " + "; ".join(f"“{shown(c)}”" for c in session.constraints) + ".")
        return "\n".join(lines)

    def _new_list(
        self,
        session: ChatSession,
        action: AgentAction,
        path: Path_,
        message: str,
        started: float,
        on_list: ListCallback | None,
        intro: str = "",
    ) -> Reply:
        history = self.history(session)
        steering = Steering(
            constraints=session.constraints, anchor=session.anchor, exclude=set(session.disliked)
        )
        k = self.settings.cards
        llm = self.recommender.settings.llm
        # with an LLM weight, the LLM reorders a longer candidate list; the first k are shown meanwhile
        n = max(k, llm.candidates) if self.explains_with_llm and llm.rerank_weight > 0 else k
        recs = steered_recommendations(self.recommender, history, session.scene, n, steering)
        recs = [r.model_copy(update={"explanation": evidence_sentence(r)}) for r in recs]
        if on_list is not None:
            on_list(recs[:k])
        recs, explained_by = self._explain(history, session.scene, recs, k)
        session.shown = recs
        reply = self._finish(
            session,
            action,
            path,
            message,
            self._list_text(session, recs, intro),
            started,
            list_changed=True,
            explained_by=explained_by,
        )
        reply.text_profile = self._text_profiles.get((history.user_id, session.scene, tuple(history.item_ids)))
        return reply

    def _list_text(self, session: ChatSession, recs: list[Recommendation], intro: str) -> str:
        wishes = ""
        if session.anchor and (anchor := self.item(session.anchor)) is not None:
            wishes += f" like «{shown(anchor.title)}»"
        if session.constraints:
            wishes += " for " + "; ".join(f"“{shown(c)}”" for c in session.constraints)
        lead = f"{intro} " if intro else ""
        if not recs:
            return f"{lead}Nothing left in {session.scene}{wishes}. Try another wish or scene."
        return f"{lead}{len(recs)} picks in {session.scene}{wishes}."

    @property
    def explains_with_llm(self) -> bool:
        """Whether new lists go through the LLM stage (a backend, switched on, and not failed)."""
        return self.backend is not None and self.settings.llm_explanations and self.backend_error is None

    def _explain(
        self, history: UserHistory, scene: str, recs: list[Recommendation], k: int
    ) -> tuple[list[Recommendation], Literal["llm", "template"]]:
        """The LLM stage (rerank by `llm.rerank_weight`, explain the top k) when a backend is there; else the
        first k with the evidence template."""
        if not self.explains_with_llm or not recs:
            return recs[:k], "template"
        from ..rerank.reranker import RerankRequest

        request = RerankRequest(
            subject=history.user_id,
            history=history,
            scene=scene,
            candidates=recs,
            k=k,
            items=self.recommender.items.get_items([r.item_id for r in recs]),
        )
        try:
            result = self._llm_stage().rerank(request)
        except ScenerecError as exc:  # the model failed to load: templates from now on
            self.backend_error = str(exc)
            return recs[:k], "template"
        if result.profile:
            self._text_profiles[(history.user_id, scene, tuple(history.item_ids))] = result.profile
        return result.recommendations, "llm" if result.counters.llm_explanations else "template"

    def _llm_stage(self):
        from ..rerank.reranker import Reranker
        from ..stores.text_profile_store import TextProfileStore

        if self._reranker is None:
            store = TextProfileStore.for_data_dir(self.recommender.settings.data_dir)
            self._reranker = Reranker(self.backend, self.recommender.settings.llm, store)  # type: ignore[arg-type]
        return self._reranker

    def _text_profile(self, session: ChatSession) -> str | None:
        """The transferred text profile for the session's history and scene (written once, then cached)."""
        if self.backend is None or self.backend_error or not self.recommender.settings.llm.use_profile:
            return None
        history = self.history(session)
        key = (history.user_id, session.scene, tuple(history.item_ids))
        if key not in self._text_profiles:
            try:
                outcome = self._llm_stage().profiler.profiles([(history.user_id, history, session.scene)])[0]
            except ScenerecError as exc:
                self.backend_error = str(exc)
                return None
            self._text_profiles[key] = outcome.text
        return self._text_profiles[key]

    def _finish(
        self,
        session: ChatSession,
        action: AgentAction | None,
        path: Path_,
        message: str,
        text: str,
        started: float,
        *,
        list_changed: bool = False,
        explained_by: Literal["llm", "template"] | None = None,
        error: str | None = None,
        feedback: list[Feedback] | None = None,
        record_action: dict | None = None,
    ) -> Reply:
        seconds = round(time.perf_counter() - started, 4)
        session.turns += 1
        self.store.record_turn(
            session,
            TurnRecord(
                turn_no=session.turns,
                user_text=message,
                action=record_action or (action.model_dump(exclude_none=True) if action else {}),
                path=path,
                reply=text,
                shown=list(session.shown) if list_changed else None,
                feedback=feedback or [],
                seconds=seconds,
            ),
        )
        return self._reply(
            session,
            action,
            path,
            text,
            started,
            list_changed=list_changed,
            explained_by=explained_by,
            error=error,
        )

    def _reply(
        self,
        session: ChatSession,
        action: AgentAction | None,
        path: Path_,
        text: str,
        started: float,
        *,
        list_changed: bool = False,
        explained_by: Literal["llm", "template"] | None = None,
        error: str | None = None,
    ) -> Reply:
        return Reply(
            text=text,
            action=action,
            path=path,
            session_id=session.session_id,
            user_id=session.user_id,
            scene=session.scene,
            recommendations=list(session.shown),
            list_changed=list_changed,
            explained_by=explained_by,
            error=error,
            seconds=round(time.perf_counter() - started, 4),
            parse_counts=dict(self.parse_counts),
        )
