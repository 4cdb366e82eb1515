"""The Textual app: scene tabs, recommendation cards, profile panel and chat over one `Agent`.

Every call into the agent runs in a thread worker (retrieval and LLM calls block), with the spinner shown
while any is running; the input line keeps taking keys meanwhile. `make_app` builds the app for the CLI
and the tests alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from ..agent.actions import AgentAction
from ..agent.conversation import Agent, ProfileView, Reply
from ..errors import ScenerecError
from ..llm.base import LLMBackend
from ..models import Recommendation
from ..paths import DataPaths, demo_catalog_dir
from ..recommend.recommender import Recommender
from ..settings import Settings
from ..stores.embeddings import Encoder
from ..stores.ingest import IngestReport
from ..stores.session_store import ChatSession, SessionStore
from ..text_safety import printable
from .commands import UserCommands
from .screens import IngestScreen, ItemDetailsScreen
from .widgets import ChatPane, ProfilePanel, RecommendationCards, SceneTabs

BackendChoice = LLMBackend | None | Literal["settings"]
USERS_IN_PALETTE = 5000


class ScenerecApp(App[None]):
    """scenerec chat."""

    CSS_PATH: ClassVar[list[str]] = ["app.tcss", "screens.tcss"]
    TITLE = "scenerec"
    COMMANDS = App.COMMANDS | {UserCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("escape", "focus_cards", "Cards"),
        Binding("slash", "focus_input", "Type", show=False),
        Binding("i", "focus_input", "Type"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        user_id: str | None = None,
        scene: str | None = None,
        session_id: str | None = None,
        backend: BackendChoice = "settings",
        encoder: Encoder | None = None,
        sessions_db: Path | None = None,
        demo_catalog: Path | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.user_id = user_id
        self.start_scene = scene
        self.session_id = session_id
        self.backend_choice = backend
        self.encoder = encoder
        self.sessions_db = sessions_db or DataPaths(settings.data_dir).sessions_db
        self.demo_catalog = demo_catalog or demo_catalog_dir()
        self.agent: Agent | None = None
        self.session: ChatSession | None = None
        self.user_choices: list[tuple[str, str]] = []
        self.text_profile: str | None = None
        self._busy = 0
        self._liked: set[str] = set()

    # --- layout ---

    def compose(self) -> ComposeResult:
        with Horizontal(id="top-bar"):
            yield SceneTabs(id="scene-tabs")
            yield Static("", id="session-bar")
        with Horizontal(id="main"):
            yield RecommendationCards(id="cards")
            yield ProfilePanel(self.settings.tui.history_shown, id="profile")
        yield ChatPane(id="chat")
        yield Footer()

    @property
    def chat(self) -> ChatPane:
        return self.query_one(ChatPane)

    @property
    def cards(self) -> RecommendationCards:
        return self.query_one(RecommendationCards)

    def on_mount(self) -> None:
        self.chat.input.focus()
        if DataPaths(self.settings.data_dir).catalog_db.exists():
            self.open_session()
        else:
            self.push_screen(
                IngestScreen(self.demo_catalog, self.settings, encoder=self.encoder), self._ingested
            )

    def _ingested(self, report: IngestReport | None) -> None:
        if report is None:
            return
        self.chat.add_status(
            f"Ingested the demo catalog: {report.items:,} items in {', '.join(report.scenes)}, "
            f"{report.interactions:,} interactions ({report.seconds:.0f} s)."
        )
        self.open_session()

    # --- talking to the agent (always from worker threads) ---

    def _busy_change(self, delta: int) -> None:
        self._busy = max(0, self._busy + delta)
        self.chat.busy(self._busy > 0)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "agent":
            return
        if event.state == WorkerState.RUNNING:
            self._busy_change(+1)
        elif event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self._busy_change(-1)
            if event.state == WorkerState.ERROR and event.worker.error is not None:
                self._error(f"{type(event.worker.error).__name__}: {event.worker.error}")

    def _error(self, message: str) -> None:
        self.chat.add_error(message)
        self.notify(printable(message, 300), severity="error", markup=False)

    def _make_backend(self) -> LLMBackend | None:
        if self.backend_choice != "settings":
            return self.backend_choice  # type: ignore[return-value]
        from ..llm import make_backend

        try:
            return make_backend(self.settings.llm)
        except ScenerecError as exc:
            self.call_from_thread(
                self.chat.add_status, f"No LLM ({exc}); using the rule parser and templates."
            )
            return None

    @work(thread=True, exit_on_error=False, group="agent", name="open")
    def open_session(self) -> None:
        """Open the stores, the backend and the session; show where it stands (or its first list)."""
        try:
            recommender = Recommender(self.settings, encoder=self.encoder)
            store = SessionStore(self.sessions_db)
            agent = Agent(recommender, store, self.settings.tui, self._make_backend())
            session = (
                agent.resume(self.session_id)
                if self.session_id
                else agent.start(self.user_id, self.start_scene)
            )
            transcript = agent.transcript(session)
            scenes = recommender.items.scenes()
            users = []
            for user_id in recommender.items.users(USERS_IN_PALETTE):
                counts = recommender.items.history(user_id).scene_counts()
                users.append((user_id, " · ".join(f"{s} {n}" for s, n in sorted(counts.items()))))
        except ScenerecError as exc:
            self.call_from_thread(self._fatal, str(exc))
            return
        self.agent, self.session, self.user_choices = agent, session, users
        self.call_from_thread(self._opened, scenes, transcript)
        if not session.shown:
            self._run(lambda on_list: agent.act(session, AgentAction(action="recommend"), on_list=on_list))
            return
        self.call_from_thread(self._show_profile, agent.profile(session))
        if agent.backend is not None:  # resumed: the transferred profile is written (or read) now
            self.text_profile = agent.profile(session, text_profile=True).text_profile
            self.call_from_thread(self._show_profile, agent.profile(session))

    def _fatal(self, message: str) -> None:
        self.exit(return_code=1, message=Text(f"error: {printable(message, 500)}"))

    async def _opened(self, scenes: list[str], transcript: list) -> None:
        assert self.session is not None
        await self.query_one(SceneTabs).set_scenes(scenes, self.session.scene)
        self._session_bar()
        if transcript:
            self.chat.add_status(f"Resumed session {self.session.session_id} ({len(transcript)} turns).")
            for turn in transcript[-20:]:
                if turn.user_text:
                    self.chat.add_user(turn.user_text)
                self.chat.add_agent(turn.reply, "" if turn.path == "key" else turn.path)
        else:
            self.chat.add_agent(
                f"Hi {self.session.user_id}! Here is what your history suggests in {self.session.scene}. "
                'Ask for more, refine ("cheaper", "not paper"), or use l/d/m/w on a card.'
            )
        if self.session.shown:
            self._liked = set(self.session.liked)
            self.cards.show(self.session.shown, self._liked)

    def _session_bar(self) -> None:
        if self.session is not None:
            bar = Text.assemble(
                ("user ", "dim"),
                (printable(self.session.user_id, 30), "bold"),
                ("  session ", "dim"),
                (self.session.session_id, ""),
            )
            self.query_one("#session-bar", Static).update(bar)

    def _run(self, call: Callable[[Callable[[list[Recommendation]], None]], Reply]) -> None:
        """In a worker thread: one agent call, then the reply and the profile view go to the screen."""
        assert self.agent is not None and self.session is not None

        def early(recs: list[Recommendation]) -> None:
            self.call_from_thread(self._early_cards, recs)

        reply = call(early)
        view = self.agent.profile(self.session)
        self.call_from_thread(self._apply, reply, view)

    @work(thread=True, exit_on_error=False, group="agent")
    def run_agent(self, call: Callable[[Callable[[list[Recommendation]], None]], Reply]) -> None:
        self._run(call)

    # --- applying results (main thread) ---

    def _early_cards(self, recs: list[Recommendation]) -> None:
        self.cards.show(recs, self._liked)
        if recs and (self.agent is not None and self.agent.explains_with_llm):
            self.chat.add_status(f"found {len(recs)} picks — writing explanations…")

    def _apply(self, reply: Reply, view: ProfileView) -> None:
        self._liked = {e.item_id for e in view.liked}
        if reply.error:
            self.chat.add_error(reply.text)
        else:
            note = reply.path if reply.path != "key" else ""
            if reply.explained_by == "llm":
                note += " · explained by the LLM"
            self.chat.add_agent(reply.text, note.strip(" ·"))
        if reply.list_changed:
            self.cards.show(reply.recommendations, self._liked)
        else:
            self.cards.mark_liked(self._liked)
        if reply.text_profile is not None or reply.list_changed:
            self.text_profile = reply.text_profile or self.text_profile
        self.query_one(SceneTabs).follow(reply.scene)
        self._show_profile(view)
        self._session_bar()

    def _show_profile(self, view: ProfileView) -> None:
        self._liked = {e.item_id for e in view.liked}
        self.query_one(ProfilePanel).show(view, self.text_profile)

    # --- what the person does ---

    @on(ChatPane.Sent)
    def send(self, event: ChatPane.Sent) -> None:
        if self.agent is None or self.session is None:
            self.chat.add_status("Still starting up…")
            return
        self.chat.add_user(event.text)
        agent, session = self.agent, self.session
        current = self.cards.current
        selected = current.item_id if current else None
        self.run_agent(lambda on_list: agent.turn(session, event.text, selected=selected, on_list=on_list))

    @on(RecommendationCards.Chosen)
    def card_chosen(self, event: RecommendationCards.Chosen) -> None:
        if self.agent is None or self.session is None:
            return
        agent, session, item_id = self.agent, self.session, event.recommendation.item_id
        if event.action == "details":
            item = agent.item(item_id)
            self.push_screen(
                ItemDetailsScreen(event.recommendation, item, item_id in self._liked),
                lambda choice: self._details_closed(choice, item_id),
            )
        elif event.action == "like":
            self.run_agent(lambda on_list: agent.like(session, item_id))
        elif event.action == "dislike":
            self.run_agent(lambda on_list: agent.dislike(session, item_id))
        elif event.action == "more_like":
            self.chat.add_status(f"more like «{printable(event.recommendation.title, 60)}»")
            self.run_agent(
                lambda on_list: agent.act(
                    session, AgentAction(action="more_like", item_ids=[item_id]), on_list=on_list
                )
            )
        elif event.action == "why":
            self.run_agent(
                lambda on_list: agent.act(session, AgentAction(action="explain", item_ids=[item_id]))
            )

    def _details_closed(self, choice: str | None, item_id: str) -> None:
        if choice in ("like", "dislike") and self.agent is not None and self.session is not None:
            agent, session = self.agent, self.session
            call = agent.like if choice == "like" else agent.dislike
            self.run_agent(lambda on_list: call(session, item_id))

    @on(SceneTabs.SceneChosen)
    def scene_chosen(self, event: SceneTabs.SceneChosen) -> None:
        if self.agent is None or self.session is None or event.scene == self.session.scene:
            return
        agent, session = self.agent, self.session
        self.chat.add_status(f"switching to {event.scene}")
        self.run_agent(
            lambda on_list: agent.act(
                session, AgentAction(action="switch_scene", scene=event.scene), on_list=on_list
            )
        )

    def pick_user(self, user_id: str) -> None:
        """Continue this session as another user (the command palette's action)."""
        if self.agent is None or self.session is None:
            return
        agent, session = self.agent, self.session
        self.chat.add_status(f"picking user {printable(user_id, 40)}")
        self.run_agent(
            lambda on_list: agent.act(
                session, AgentAction(action="pick_user", user_id=user_id), on_list=on_list
            )
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # moving focus between cards and input means nothing on the ingest screen or a dialog
        if action in ("focus_cards", "focus_input"):
            return self.screen is self.screen_stack[0]
        return True

    def action_focus_cards(self) -> None:
        self.cards.focus()

    def action_focus_input(self) -> None:
        self.chat.input.focus()


def make_app(
    settings: Settings,
    *,
    user_id: str | None = None,
    scene: str | None = None,
    session_id: str | None = None,
    backend: BackendChoice = "settings",
    encoder: Encoder | None = None,
    sessions_db: Path | None = None,
    demo_catalog: Path | None = None,
) -> ScenerecApp:
    """The chat app, as `scenerec chat` runs it and the tests drive it.

    `backend`: an LLM backend instance, None for no LLM (rule parser and evidence templates), or
    "settings" to build `settings.llm`'s backend when the app opens. `sessions_db` defaults to the data
    directory's sessions database. An empty data directory first gets `demo_catalog` (default: the
    shipped demo catalog), with a progress screen.
    """
    return ScenerecApp(
        settings,
        user_id=user_id,
        scene=scene,
        session_id=session_id,
        backend=backend,
        encoder=encoder,
        sessions_db=sessions_db,
        demo_catalog=demo_catalog,
    )
