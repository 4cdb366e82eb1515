"""Chat sessions in SQLite: each turn (message, action, list shown, feedback) and the session's state.

A turn is written in one transaction together with the state it leaves behind, so a crash loses at most
the turn in flight, and a session resumes from its last completed turn.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from ..errors import ScenerecError, StoreError
from ..models import Recommendation
from .sqlite_util import connect, migrate, write_transaction

FeedbackKind = Literal["like", "dislike"]


class UnknownSessionError(ScenerecError):
    """No session with that id in the sessions database."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"unknown session '{session_id}' (run `scenerec sessions list` to see sessions)")


class ChatSession(BaseModel):
    """Where a conversation stands: who, which scene, what was liked, disliked, asked for and shown."""

    session_id: str
    user_id: str
    scene: str
    liked: list[str] = Field(default_factory=list, description="Item ids liked in this session, in order.")
    disliked: list[str] = Field(default_factory=list, description="Item ids excluded for this session.")
    constraints: list[str] = Field(default_factory=list, description="Refine texts now in force.")
    anchor: str | None = Field(None, description="The item a 'more like this' list is built around.")
    shown: list[Recommendation] = Field(default_factory=list, description="The list on screen.")
    turns: int = 0
    created_at: str = ""


class Feedback(BaseModel):
    item_id: str
    kind: FeedbackKind


class TurnRecord(BaseModel):
    """One completed turn as stored."""

    turn_no: int = 0
    user_text: str = ""
    action: dict[str, Any] = Field(default_factory=dict)
    path: str = "rules"  # which reader turned the message into the action: llm, rules, or key (a key press)
    reply: str = ""
    shown: list[Recommendation] | None = None  # the new list, when the turn showed one
    feedback: list[Feedback] = Field(default_factory=list)
    seconds: float = 0.0
    created_at: str = ""


class SessionSummary(BaseModel):
    """What `scenerec sessions list` shows."""

    session_id: str
    user_id: str
    scene: str
    turns: int
    created_at: str
    updated_at: str
    last_message: str


def m001_sessions(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, scene TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, turns INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            touched INTEGER NOT NULL DEFAULT 0)"""  # bumped by each write: "most recent" without clock ties
    )
    conn.execute(
        """CREATE TABLE turns (
            session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
            turn_no INTEGER NOT NULL, created_at TEXT NOT NULL, user_text TEXT NOT NULL,
            action TEXT NOT NULL, path TEXT NOT NULL, reply TEXT NOT NULL, seconds REAL NOT NULL,
            PRIMARY KEY (session_id, turn_no))"""
    )
    conn.execute(
        """CREATE TABLE shown (
            session_id TEXT NOT NULL, turn_no INTEGER NOT NULL, rank INTEGER NOT NULL,
            item_id TEXT NOT NULL, score REAL NOT NULL, card TEXT NOT NULL,
            PRIMARY KEY (session_id, turn_no, rank),
            FOREIGN KEY (session_id, turn_no) REFERENCES turns(session_id, turn_no) ON DELETE CASCADE)"""
    )
    conn.execute(
        """CREATE TABLE feedback (
            session_id TEXT NOT NULL, turn_no INTEGER NOT NULL, item_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('like', 'dislike')),
            PRIMARY KEY (session_id, turn_no, item_id),
            FOREIGN KEY (session_id, turn_no) REFERENCES turns(session_id, turn_no) ON DELETE CASCADE)"""
    )
    conn.execute("CREATE INDEX sessions_touched ON sessions(touched)")


MIGRATIONS = [m001_sessions]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SessionStore:
    """Sessions of one data directory (`paths.sessions_db`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        migrate(self._conn, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self._conn) as conn:  # waits out the other chat processes' writes
            yield conn

    # --- writes ---

    def create(self, user_id: str, scene: str, session_id: str | None = None) -> ChatSession:
        """A new session, stored at once (so it is listed even before its first turn); a fresh random id
        unless one is given (an existing one is an error)."""
        now = _now()
        for _ in range(1 if session_id else 8):
            session = ChatSession(
                session_id=session_id or secrets.token_hex(4), user_id=user_id, scene=scene, created_at=now
            )
            try:
                with self._transaction() as conn:
                    conn.execute(
                        "INSERT INTO sessions (session_id, user_id, scene, created_at, updated_at, turns, state,"
                        " touched) VALUES (?, ?, ?, ?, ?, 0, ?, (SELECT COALESCE(MAX(touched), 0) + 1 FROM sessions))",
                        (session.session_id, user_id, scene, now, now, session.model_dump_json()),
                    )
                return session
            except sqlite3.IntegrityError:
                continue
        raise StoreError(
            f"session id {session_id} is taken" if session_id else "could not pick an unused session id"
        )

    def record_turn(self, session: ChatSession, turn: TurnRecord) -> None:
        """Store a completed turn and the state it left, in one transaction (all of it or none)."""
        created = turn.created_at or _now()
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO turns (session_id, turn_no, created_at, user_text, action, path, reply, seconds)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session.session_id,
                        turn.turn_no,
                        created,
                        turn.user_text,
                        json.dumps(turn.action),
                        turn.path,
                        turn.reply,
                        turn.seconds,
                    ),
                )
                if turn.shown is not None:
                    conn.executemany(
                        "INSERT INTO shown (session_id, turn_no, rank, item_id, score, card)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            (session.session_id, turn.turn_no, rank, r.item_id, r.score, r.model_dump_json())
                            for rank, r in enumerate(turn.shown, start=1)
                        ),
                    )
                conn.executemany(
                    "INSERT OR REPLACE INTO feedback (session_id, turn_no, item_id, kind) VALUES (?, ?, ?, ?)",
                    ((session.session_id, turn.turn_no, f.item_id, f.kind) for f in turn.feedback),
                )
                updated = conn.execute(
                    "UPDATE sessions SET user_id = ?, scene = ?, updated_at = ?, turns = ?, state = ?,"
                    " touched = (SELECT MAX(touched) + 1 FROM sessions) WHERE session_id = ?",
                    (
                        session.user_id,
                        session.scene,
                        created,
                        session.turns,
                        session.model_dump_json(),
                        session.session_id,
                    ),
                )
                if updated.rowcount != 1:
                    raise UnknownSessionError(session.session_id)
        except sqlite3.IntegrityError as exc:
            raise StoreError(
                f"turn {turn.turn_no} of session {session.session_id} not stored: {exc}"
            ) from exc

    def delete(self, session_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    # --- reads ---

    def load(self, session_id: str) -> ChatSession:
        """The state a session was left in after its last completed turn."""
        row = self._conn.execute("SELECT state FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            raise UnknownSessionError(session_id)
        return ChatSession.model_validate_json(row[0])

    def turns(self, session_id: str) -> list[TurnRecord]:
        """Every stored turn of a session, oldest first, with the lists shown and the feedback given."""
        shown: dict[int, list[Recommendation]] = {}
        for turn_no, card in self._conn.execute(
            "SELECT turn_no, card FROM shown WHERE session_id = ? ORDER BY turn_no, rank", (session_id,)
        ):
            shown.setdefault(turn_no, []).append(Recommendation.model_validate_json(card))
        feedback: dict[int, list[Feedback]] = {}
        for turn_no, item_id, kind in self._conn.execute(
            "SELECT turn_no, item_id, kind FROM feedback WHERE session_id = ? ORDER BY turn_no", (session_id,)
        ):
            feedback.setdefault(turn_no, []).append(Feedback(item_id=item_id, kind=kind))
        rows = self._conn.execute(
            "SELECT turn_no, created_at, user_text, action, path, reply, seconds FROM turns"
            " WHERE session_id = ? ORDER BY turn_no",
            (session_id,),
        )
        return [
            TurnRecord(
                turn_no=r[0],
                created_at=r[1],
                user_text=r[2],
                action=json.loads(r[3]),
                path=r[4],
                reply=r[5],
                seconds=r[6],
                feedback=feedback.get(r[0], []),
                shown=shown.get(r[0]),
            )
            for r in rows
        ]

    def list_sessions(self, limit: int = 20, user_id: str | None = None) -> list[SessionSummary]:
        """Most recently used sessions first."""
        sql = (
            "SELECT s.session_id, s.user_id, s.scene, s.turns, s.created_at, s.updated_at,"
            " COALESCE((SELECT user_text FROM turns t WHERE t.session_id = s.session_id AND user_text != ''"
            "  ORDER BY turn_no DESC LIMIT 1), '') FROM sessions s"
        )
        params: tuple[Any, ...] = ()
        if user_id is not None:
            sql += " WHERE s.user_id = ?"
            params = (user_id,)
        sql += " ORDER BY s.touched DESC LIMIT ?"
        rows = self._conn.execute(sql, (*params, int(limit)))
        return [
            SessionSummary(
                session_id=r[0],
                user_id=r[1],
                scene=r[2],
                turns=r[3],
                created_at=r[4],
                updated_at=r[5],
                last_message=r[6],
            )
            for r in rows
        ]

    def feedback(self, session_id: str) -> dict[str, FeedbackKind]:
        """The latest feedback per item of a session."""
        rows = self._conn.execute(
            "SELECT item_id, kind FROM feedback WHERE session_id = ? ORDER BY turn_no", (session_id,)
        )
        return {item_id: kind for item_id, kind in rows}
