"""The Textual app: behaviour with Pilot, looks with snapshots (tests/snapshots/), the fake LLM backend.

The FakeBackend is a scripted stand-in for unit tests, not a model: with nothing queued it answers each
schema's minimal value, which the agent treats as unusable or contradicted where the rules are sure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, LoadingIndicator, RichLog, Static
from textual.worker import WorkerCancelled

from scenerec.errors import ScenerecError
from scenerec.llm.fake import FakeBackend
from scenerec.settings import Settings
from scenerec.stores.embeddings import Encoder
from scenerec.stores.ingest import IngestReport
from scenerec.stores.session_store import SessionStore
from scenerec.tui import ScenerecApp, make_app
from scenerec.tui import app as tui_app
from scenerec.tui.screens import IngestScreen, ItemDetailsScreen
from scenerec.tui.widgets import RecommendationCard, SceneTabs

from .conftest import TINY_HISTORIES, TINY_ITEMS, write_catalog

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (120, 40)


@pytest.fixture(autouse=True)
def _snapshots_in_tests_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep snapshot SVGs in tests/snapshots/<test file>/ rather than syrupy's __snapshots__."""
    monkeypatch.setattr(
        SVGImageExtension,
        "dirname",
        classmethod(lambda cls, *, test_location: str(SNAPSHOTS / test_location.basename)),
    )


def tiny_app(settings: Settings, encoder: Encoder, tmp_path: Path, **kwargs: object) -> ScenerecApp:
    kwargs.setdefault("backend", None)
    kwargs.setdefault("user_id", "bob")
    return make_app(settings, encoder=encoder, sessions_db=tmp_path / "sessions.sqlite", **kwargs)  # type: ignore[arg-type]


async def settle(pilot: Pilot) -> None:
    """Wait until every worker is done and the screen has caught up (workers may start workers); the
    input's cursor stops blinking, so a screenshot does not depend on when in the blink it is taken."""
    for box in pilot.app.query(Input):
        box.cursor_blink = False
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:  # a screen's worker, cancelled as its screen closed
            pass
        await pilot.pause()


def card_titles(app: App) -> list[str]:
    return [c.recommendation.title for c in app.query(RecommendationCard)]


def profile_text(app: App) -> str:
    return str(app.query_one("#profile-body", Static).content)


def chat_text(app: App) -> str:
    return "\n".join(line.text for line in app.query_one("#chat-log", RichLog).lines)


async def type_message(pilot: Pilot, text: str) -> None:
    pilot.app.query_one("#chat-input", Input).focus()
    await pilot.press(*text, "enter")
    await settle(pilot)


# --- behaviour ---


async def test_typing_a_request_shows_a_list(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert len(card_titles(app)) == 5  # the first list comes by itself
        await type_message(pilot, "something about cooking")
        assert set(card_titles(app)[:2]) == {"chef", "julie and julia"}
        assert "you  something about cooking" in chat_text(app)
        assert "for “about cooking”" in chat_text(app) and "(rules)" in chat_text(app)
        assert app.query_one("#chat-input", Input).value == ""


async def test_liking_a_card_changes_the_profile_panel(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "Liked this session" not in profile_text(app)
        await pilot.press("escape", "j", "l")  # to the cards, second card, like
        await settle(pilot)
        liked = card_titles(app)[1]
        assert "Liked this session (1)" in profile_text(app) and liked in profile_text(app)
        assert app.session.liked == [app.query(RecommendationCard)[1].recommendation.item_id]
        assert "♥ liked" in str(app.query(RecommendationCard)[1].query_one(Static).content)
        await pilot.press("d")  # dislike the same card: hidden, and no longer liked
        await settle(pilot)
        assert liked not in card_titles(app) and "Hidden this session (1)" in profile_text(app)
        assert "Liked this session" not in profile_text(app)


async def test_switching_scene_by_tab_and_by_typing(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tabs = app.query_one(SceneTabs)
        assert app.session.scene == "films" and tabs.active == "scene-films"
        await pilot.click("#scene-books")
        await settle(pilot)
        assert app.session.scene == "books" and {
            c.recommendation.scene for c in app.query(RecommendationCard)
        } == {"books"}
        await type_message(pilot, "show me films")
        assert app.session.scene == "films" and tabs.active == "scene-films"
        assert {c.recommendation.scene for c in app.query(RecommendationCard)} == {"films"}
        assert "recommending in films" in profile_text(app)
        assert app.session.turns == 3  # first list, tab, typed: the tab that followed was not a turn


async def test_asking_why_by_key_and_by_typing(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path, user_id="alice")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        second = app.query(RecommendationCard)[1].recommendation
        await type_message(pilot, "why #2")
        assert f"«{second.title}»" in chat_text(app) and "What drove it, ranked by" in chat_text(app)
        await pilot.press("escape", "w")  # why on the first card
        await settle(pilot)
        first = app.query(RecommendationCard)[0].recommendation
        assert chat_text(app).count("What drove it, ranked by") == 2 and f"«{first.title}»" in chat_text(app)
        assert "█" in chat_text(app) and "% " in chat_text(app)  # a bar and a share per contributing history item


async def test_more_like_this_and_details(tiny_settings: Settings, encoder: Encoder, tmp_path: Path) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path, user_id="carol")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        first = app.query(RecommendationCard)[0].recommendation
        await pilot.press("escape", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ItemDetailsScreen) and app.screen.rec.item_id == first.item_id
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ItemDetailsScreen)
        await pilot.press("m")
        await settle(pilot)
        assert app.session.anchor == first.item_id and first.title not in card_titles(app)
        assert f"More like «{first.title}»" in profile_text(app).replace("\n", "")


async def test_resuming_a_session_shows_the_same_state(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_message(pilot, "show me books")
        await pilot.press("escape", "l")
        await settle(pilot)
        await type_message(pilot, "not sketching")
        session_id = app.session.session_id
        state = (app.session.scene, card_titles(app), profile_text(app), app.session.liked)
    resumed = tiny_app(tiny_settings, encoder, tmp_path, user_id=None, session_id=session_id)
    async with resumed.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert resumed.session.session_id == session_id
        assert (
            resumed.session.scene,
            card_titles(resumed),
            profile_text(resumed),
            resumed.session.liked,
        ) == state
        assert resumed.query_one(SceneTabs).active == "scene-books"
        assert "Resumed session" in chat_text(resumed) and "you  not sketching" in chat_text(resumed)


async def test_an_unknown_session_exits_with_an_error(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path, session_id="nope")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            if app.return_code is not None:
                break
    assert app.return_code == 1


async def test_picking_another_user_from_the_command_palette(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    app = tiny_app(tiny_settings, encoder, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"pick user dan")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert app.session.user_id == "dan" and "Profile of dan" in profile_text(app)
        assert "user dan" in str(app.query_one("#session-bar", Static).content)


class HeldFake(FakeBackend):
    """The fake backend, held busy (like a CPU model mid-answer) until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.working = threading.Event()

    def chat(self, messages, *, schema=None, max_tokens=None):
        self.working.set()
        self.release.wait(60)
        return super().chat(messages, schema=schema, max_tokens=max_tokens)


async def test_the_input_takes_keys_while_the_llm_works(
    tiny_settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    backend = HeldFake()
    backend.release.set()
    app = tiny_app(tiny_settings, encoder, tmp_path, backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        backend.release.clear()
        backend.working.clear()
        box = app.query_one("#chat-input", Input)
        box.focus()
        backend.enqueue('{"action": "refine", "constraint": "cheaper"}')
        await pilot.press(*"cheaper", "enter")
        for _ in range(100):
            if backend.working.is_set():
                break
            await pilot.pause(0.05)
        assert backend.working.is_set()
        await pilot.press(*"next question")
        assert box.value == "next question" and not backend.release.is_set()  # typed while the model works
        assert app.query_one("#chat-spinner", LoadingIndicator).display
        backend.release.set()
        await settle(pilot)
        assert not app.query_one("#chat-spinner", LoadingIndicator).display
        assert "for “cheaper”" in chat_text(app) and box.value == "next question"


async def test_hostile_titles_and_messages_are_shown_as_text(
    make_settings,
    encoder: Encoder,
    tmp_path: Path,
) -> None:
    evil = [
        ("f1", "films", "dragon \x1b[31mred\x1b[0m film\x1b]0;owned\x07", "dragons"),
        ("f2", "films", "[bold red]markup[/] dragon \u202eevil", "dragons"),
    ]
    items = [i for i in TINY_ITEMS if i[0] not in ("f1", "f2")] + evil
    settings = make_settings("evil")
    from scenerec.stores.ingest import ingest_catalog

    ingest_catalog(write_catalog(tmp_path / "evil", items, TINY_HISTORIES), settings, encoder=encoder)
    app = tiny_app(settings, encoder, tmp_path, user_id="alice")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_message(pilot, "more like dragon")
        box = app.query_one("#chat-input", Input)
        box.value = "[red]\x1b[2Jhello[/red] " + "x" * 20_000  # pasted, not typed key by key
        box.focus()
        await pilot.press("enter")
        await settle(pilot)
        cards = " ".join(str(c.query_one(Static).content) for c in app.query(RecommendationCard))
        assert "[bold red]markup[/]" in cards and "dragon red film" in cards
        screen = app.export_screenshot()
        for text in (cards, chat_text(app), profile_text(app), screen):
            assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "[red]" in chat_text(app) and "…" in chat_text(app)  # shown literally, and cut
        assert (
            len(SessionStore(tmp_path / "sessions.sqlite").turns(app.session.session_id)[-1].user_text)
            == 20_000
        )


async def test_first_run_ingests_the_demo_catalog_with_progress(
    make_settings,
    encoder: Encoder,
    tmp_path: Path,
) -> None:
    settings = make_settings("empty")
    demo = write_catalog(tmp_path / "demo")
    app = make_app(settings, encoder=SlowEncoder(encoder), backend=None, demo_catalog=demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert isinstance(app.screen, IngestScreen)
        for _ in range(100):
            step = str(app.screen.query_one("#ingest-step", Static).content)
            if "of 18 items" in step:
                break
            await pilot.pause(0.05)
        assert "encoding the catalog's items" in step and "of 18 items" in step
        await settle(pilot)
        assert not isinstance(app.screen, IngestScreen)
        assert "Ingested the demo catalog: 18 items" in chat_text(app)
        assert app.session is not None and len(card_titles(app)) == 5
        assert (settings.data_dir / "sessions.sqlite").exists()


class SlowEncoder(Encoder):
    """The real encoder, slowed down so a test can watch the progress screen."""

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.name, self.dimension = inner, inner.name, inner.dimension

    def encode(self, texts, *, show_progress=False):
        time.sleep(0.5)
        return self.inner.encode(texts)


# --- looks ---


@pytest.fixture
def demo_app_factory(demo_settings: Settings, encoder: Encoder, tmp_path: Path):
    """The demo catalog with the fake backend and a fixed session id (so the screen is reproducible)."""
    from scenerec.recommend.recommender import Recommender, pick_demo_user

    with Recommender(demo_settings, encoder=encoder) as recommender:
        user_id, scene = pick_demo_user(recommender)
    sessions = tmp_path / "sessions.sqlite"
    with SessionStore(sessions) as store:
        store.create(user_id, scene, session_id="snapshot")

    def build() -> ScenerecApp:
        return make_app(
            demo_settings, session_id="snapshot", backend=FakeBackend(), encoder=encoder, sessions_db=sessions
        )

    return build


def test_snapshot_main_screen(demo_app_factory, snap_compare) -> None:
    assert snap_compare(demo_app_factory(), terminal_size=SIZE, run_before=settle)


def test_snapshot_why_and_a_like(demo_app_factory, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("escape", "j", "l", "w")
        await settle(pilot)

    assert snap_compare(demo_app_factory(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_details(demo_app_factory, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("escape", "enter")
        await pilot.pause()

    assert snap_compare(demo_app_factory(), terminal_size=SIZE, run_before=run_before)


class IngestOnly(App[None]):
    """The first-run screen alone, with a scripted ingest held halfway through."""

    CSS_PATH = Path(tui_app.__file__).with_name("screens.tcss")

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.release = threading.Event()

    def job(self, progress) -> IngestReport:
        progress("encoding the catalog's items", 1536, 3000)
        self.release.wait(30)
        raise ScenerecError("released")  # the screen shows the failure; the snapshot was taken before

    def on_mount(self) -> None:
        self.push_screen(IngestScreen(Path("demo"), self.settings, job=self.job))


def test_snapshot_first_run_ingest(make_settings, snap_compare) -> None:
    settings = make_settings("first-run").model_copy(update={"data_dir": Path("/data/scenerec")})
    app = IngestOnly(settings)

    async def run_before(pilot: Pilot) -> None:
        for _ in range(100):
            await pilot.pause(0.05)
            if "1,536" in str(pilot.app.screen.query_one("#ingest-step", Static).content):
                break

    try:
        assert snap_compare(app, terminal_size=(100, 20), run_before=run_before)
    finally:
        app.release.set()
