"""Chat sessions in SQLite: round trips, atomic turns, crash safety, listing, the `sessions` CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from scenerec.cli import cli
from scenerec.errors import StoreError
from scenerec.models import Evidence, Recommendation
from scenerec.stores.session_store import (
    ChatSession,
    Feedback,
    SessionStore,
    TurnRecord,
    UnknownSessionError,
)


def card(item_id: str, score: float = 0.5) -> Recommendation:
    return Recommendation(
        item_id=item_id,
        title=f"title of {item_id}",
        scene="films",
        score=score,
        evidence=[Evidence(item_id="b1", title="the hobbit", scene="books", similarity=0.4)],
        explanation="Because you liked «the hobbit» in books.",
    )


def record(
    store: SessionStore,
    session: ChatSession,
    text: str,
    shown: list[Recommendation] | None = None,
    feedback: list[Feedback] | None = None,
) -> None:
    session.turns += 1
    if shown is not None:
        session.shown = shown
    store.record_turn(
        session,
        TurnRecord(
            turn_no=session.turns,
            user_text=text,
            action={"action": "recommend"},
            path="rules",
            reply=f"reply to {text}",
            shown=shown,
            feedback=feedback or [],
        ),
    )


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    with SessionStore(tmp_path / "sessions.sqlite") as s:
        yield s


def test_round_trip_of_state_turns_lists_and_feedback(store: SessionStore) -> None:
    session = store.create("alice", "films")
    record(store, session, "recommend something", shown=[card("f1"), card("f2", 0.4)])
    session.liked.append("f1")
    record(store, session, "", feedback=[Feedback(item_id="f1", kind="like")])
    session.disliked.append("f2")
    session.shown = [card("f1")]
    record(store, session, "hide #2", shown=[card("f1")], feedback=[Feedback(item_id="f2", kind="dislike")])

    loaded = store.load(session.session_id)
    assert loaded == session
    turns = store.turns(session.session_id)
    assert [t.turn_no for t in turns] == [1, 2, 3]
    assert turns[0].user_text == "recommend something"
    assert [r.item_id for r in turns[0].shown or []] == ["f1", "f2"]
    assert turns[0].shown[0].evidence[0].title == "the hobbit"  # the whole card is kept
    assert turns[1].shown is None and turns[1].feedback == [Feedback(item_id="f1", kind="like")]
    assert store.feedback(session.session_id) == {"f1": "like", "f2": "dislike"}


def test_migrations_are_recorded_and_reopening_keeps_sessions(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionStore(path) as first:
        session = first.create("bob", "books")
        record(first, session, "hi")
    with SessionStore(path) as second:
        assert second.load(session.session_id).turns == 1
        names = [r[0] for r in second._conn.execute("SELECT name FROM _migrations")]
    assert names == ["m001_sessions"]


def test_unknown_session(store: SessionStore) -> None:
    with pytest.raises(UnknownSessionError, match="unknown session 'nope'"):
        store.load("nope")


def test_given_session_id_and_a_taken_one(store: SessionStore) -> None:
    assert store.create("bob", "books", session_id="fixed01").session_id == "fixed01"
    with pytest.raises(StoreError, match="taken"):
        store.create("bob", "books", session_id="fixed01")


def test_a_failed_turn_writes_nothing(store: SessionStore) -> None:
    session = store.create("alice", "films")
    record(store, session, "first", shown=[card("f1")])
    before = store.load(session.session_id)
    broken = session.model_copy(deep=True)
    broken.constraints = ["cheaper"]  # the state the failed turn would leave
    # turn number 1 again: the insert fails after nothing else was written, and the state stays
    with pytest.raises(StoreError):
        store.record_turn(broken, TurnRecord(turn_no=1, user_text="again", shown=[card("f9")]))
    assert store.load(session.session_id) == before
    assert [t.user_text for t in store.turns(session.session_id)] == ["first"]
    rows = store._conn.execute("SELECT item_id FROM shown WHERE session_id = ?", (session.session_id,))
    assert [r[0] for r in rows] == ["f1"]


def test_a_crash_mid_turn_loses_only_that_turn(tmp_path: Path) -> None:
    """A process killed inside a turn's transaction leaves every completed turn and its state."""
    path = tmp_path / "s.sqlite"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_session_store import card, record
        from scenerec.stores.session_store import SessionStore, TurnRecord
        store = SessionStore({str(path)!r})
        session = store.create("alice", "films", session_id="crash01")
        record(store, session, "one", shown=[card("f1")])
        record(store, session, "two", shown=[card("f2")])
        conn = store._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO turns VALUES ('crash01', 3, 'now', 'three', '{{}}', 'rules', 'r', 0)")
        os._exit(1)  # no commit, no close
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr
    with SessionStore(path) as store:
        session = store.load("crash01")
        assert session.turns == 2 and [r.item_id for r in session.shown] == ["f2"]
        assert [t.user_text for t in store.turns("crash01")] == ["one", "two"]


def test_list_sessions_newest_first_and_by_user(store: SessionStore) -> None:
    first = store.create("alice", "films")
    second = store.create("bob", "books")
    record(store, second, "for bob")
    record(store, first, "later, for alice")
    rows = store.list_sessions()
    assert [r.session_id for r in rows] == [first.session_id, second.session_id]
    assert rows[0].last_message == "later, for alice" and rows[0].turns == 1
    assert [r.session_id for r in store.list_sessions(user_id="bob")] == [second.session_id]
    assert len(store.list_sessions(limit=1)) == 1


def test_sessions_cli_list_and_show(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with SessionStore(data / "sessions.sqlite") as store:
        session = store.create("alice", "films", session_id="cli00001")
        record(store, session, "recommend \x1b[31msomething\x1b[0m", shown=[card("f1")])
    runner = CliRunner()
    listed = runner.invoke(cli, ["sessions", "list", "--data-dir", str(data)])
    assert listed.exit_code == 0, listed.output
    assert "cli00001" in listed.output and "alice" in listed.output
    assert "\x1b" not in listed.output  # the stored message is shown safely
    as_json = runner.invoke(cli, ["sessions", "list", "--json", "--data-dir", str(data)])
    assert json.loads(as_json.output)[0]["session_id"] == "cli00001"
    shown = runner.invoke(cli, ["sessions", "show", "cli00001", "--data-dir", str(data)])
    assert shown.exit_code == 0 and "title of f1" in shown.output
    empty = runner.invoke(cli, ["sessions", "list", "--data-dir", str(tmp_path / "none")])
    assert "no sessions yet" in empty.output


def test_state_column_is_plain_json(store: SessionStore) -> None:
    """The state is readable without scenerec (for people inspecting the file)."""
    session = store.create("alice", "films")
    record(store, session, "x", shown=[card("f1")])
    raw = sqlite3.connect(store.path).execute("SELECT state FROM sessions").fetchone()[0]
    assert json.loads(raw)["shown"][0]["item_id"] == "f1"
