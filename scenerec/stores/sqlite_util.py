"""SQLite connections, write transactions that wait out other writers, and named migrations."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError

Migration = Callable[[sqlite3.Connection], None]

BUSY_TIMEOUT_S = 30.0
BEGIN_ATTEMPTS = 6  # on top of SQLite's own busy wait: a writer that holds the lock longer is stuck


def is_locked(exc: sqlite3.OperationalError) -> bool:
    """True for SQLite's 'database is locked' / 'database table is locked' / busy errors."""
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def connect(path: Path, *, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection in WAL mode that waits for locks instead of failing at once; the database's folder
    is created when missing."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {Path(path).parent}: {exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        _with_retry(path, lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return conn


def _with_retry(path: Path | str, statement: Callable[[], object], attempts: int = BEGIN_ATTEMPTS) -> None:
    """Run `statement`, retrying with jittered backoff while another process holds the write lock."""
    for attempt in range(attempts):
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            if attempt == attempts - 1:
                raise StoreError(
                    f"database {path} stays locked by another scenerec process; try again when it is done"
                ) from exc
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock now (not at the first write), waiting out other writers; StoreError if stuck."""
    _with_retry(_db_path(conn), lambda: conn.execute("BEGIN IMMEDIATE"))


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: everything in it lands, or nothing does."""
    begin_immediate(conn)
    try:
        yield conn
        _with_retry(_db_path(conn), lambda: conn.execute("COMMIT"))
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _db_path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "?"


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Apply, in order, each migration whose function name is not yet recorded.

    The recorded names are read again inside the write transaction: two processes opening a new
    database at once would otherwise both run `m001` and the second would fail on 'table exists'.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    if all(m.__name__ in done for m in migrations):
        return
    with write_transaction(conn):
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        for migration in migrations:
            if migration.__name__ in done:
                continue
            migration(conn)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", (migration.__name__,)
            )
