"""SQLite store of transferred text profiles, each kept with the hash of the inputs it was written from.

One row per (subject, scene, model): a subject is a user id (or an evaluation case id). A lookup returns
the profile only while the stored inputs hash equals the current one, so a changed history, another
prompt template or another model writes a new profile instead of reusing a stale one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel

from ..paths import DataPaths
from .sqlite_util import connect, migrate


def text_profile_db_path(paths: DataPaths) -> Path:
    """Where a data directory keeps its profiles."""
    return paths.root / "profiles.sqlite"


class StoredTextProfile(BaseModel):
    subject: str
    scene: str
    model: str
    inputs_hash: str
    profile: str


def m001_profiles(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE profiles (
            subject TEXT NOT NULL,
            scene TEXT NOT NULL,
            model TEXT NOT NULL,
            inputs_hash TEXT NOT NULL,
            profile TEXT NOT NULL,
            updated_at TEXT NOT NULL DEFAULT (datetime('now')),
            PRIMARY KEY (subject, scene, model)
        )"""
    )


MIGRATIONS = [m001_profiles]


class TextProfileStore:
    """Transferred text profiles keyed by subject, scene and model, valid for one inputs hash."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        migrate(self.conn, MIGRATIONS)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> TextProfileStore:
        return cls(text_profile_db_path(DataPaths(data_dir)))

    def get(self, subject: str, scene: str, model: str, inputs_hash: str) -> str | None:
        """The stored profile if it was written from exactly these inputs, else None."""
        row = self.conn.execute(
            "SELECT inputs_hash, profile FROM profiles WHERE subject=? AND scene=? AND model=?",
            (subject, scene, model),
        ).fetchone()
        if row is None or row[0] != inputs_hash:
            return None
        return row[1]

    def put(self, profile: StoredTextProfile) -> None:
        self.conn.execute(
            """INSERT INTO profiles (subject, scene, model, inputs_hash, profile) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (subject, scene, model) DO UPDATE SET
                 inputs_hash=excluded.inputs_hash, profile=excluded.profile, updated_at=datetime('now')""",
            (profile.subject, profile.scene, profile.model, profile.inputs_hash, profile.profile),
        )

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TextProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
