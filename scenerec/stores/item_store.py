"""The item table, user histories, cases and the store manifest: the source of truth, in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..models import Case, HistoryEntry, Interaction, Item, SceneInfo, UserHistory
from .sqlite_util import connect, migrate, write_transaction


def m001_initial(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE items (
            item_id TEXT PRIMARY KEY, scene TEXT NOT NULL, title TEXT NOT NULL,
            text TEXT NOT NULL, content_hash TEXT NOT NULL)"""
    )
    conn.execute("CREATE INDEX items_scene ON items(scene)")
    conn.execute(
        """CREATE TABLE interactions (
            user_id TEXT NOT NULL, position INTEGER NOT NULL,
            item_id TEXT NOT NULL REFERENCES items(item_id), scene TEXT NOT NULL,
            PRIMARY KEY (user_id, position))"""
    )
    conn.execute("CREATE INDEX interactions_item ON interactions(item_id)")
    conn.execute(
        """CREATE TABLE cases (
            case_id TEXT PRIMARY KEY, split TEXT NOT NULL, user_id TEXT NOT NULL,
            target_scene TEXT NOT NULL, target_item TEXT NOT NULL, history TEXT NOT NULL)"""
    )
    conn.execute("CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


MIGRATIONS = [m001_initial]


class ItemStore:
    """Items, interactions and cases of every ingested catalog, plus the manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        migrate(self._conn, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything in it lands, or nothing does (waits out other writers)."""
        with write_transaction(self._conn) as conn:
            yield conn

    # --- writes (call inside `transaction()`) ---

    def upsert_items(self, items: Iterable[Item]) -> None:
        self._conn.executemany(
            """INSERT INTO items (item_id, scene, title, text, content_hash) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(item_id) DO UPDATE SET scene=excluded.scene, title=excluded.title,
               text=excluded.text, content_hash=excluded.content_hash""",
            ((i.item_id, i.scene, i.title, i.text, i.content_hash) for i in items),
        )

    def replace_histories(self, interactions: Sequence[Interaction]) -> None:
        """Each user named in `interactions` gets exactly those interactions as history."""
        users = sorted({i.user_id for i in interactions})
        self._conn.executemany("DELETE FROM interactions WHERE user_id = ?", ((u,) for u in users))
        self._conn.executemany(
            "INSERT INTO interactions (user_id, position, item_id, scene) VALUES (?, ?, ?, ?)",
            ((i.user_id, i.position, i.item_id, i.scene) for i in interactions),
        )

    def upsert_cases(self, cases: Iterable[Case]) -> None:
        self._conn.executemany(
            """INSERT OR REPLACE INTO cases (case_id, split, user_id, target_scene, target_item, history)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (
                (c.case_id, c.split, c.user_id, c.target_scene, c.target_item, json.dumps(c.history))
                for c in cases
            ),
        )

    def set_manifest(self, **values: str | int) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO manifest (key, value) VALUES (?, ?)",
            ((k, str(v)) for k, v in values.items()),
        )

    # --- reads ---

    def manifest(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM manifest"))

    def version(self) -> int:
        """Bumped by every ingest; readers compare it to notice newer data."""
        return int(self.manifest().get("version", 0))

    def vectors_epoch(self) -> int:
        """Bumped when a repair rebuilt chroma collections: readers reopen their chroma client."""
        return int(self.manifest().get("vectors_epoch", 0))

    def stamp(self) -> tuple[str, str, str]:
        """(version, synced version, vectors epoch): a reader whose stamp differs reopens what it cached
        (chroma is rewritten between the version and the synced version, and by a repair)."""
        manifest = self.manifest()
        return tuple(manifest.get(k, "0") for k in ("version", "synced_version", "vectors_epoch"))  # type: ignore[return-value]

    def scenes(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT scene FROM items ORDER BY scene")]

    def scene_info(self) -> list[SceneInfo]:
        rows = self._conn.execute(
            """SELECT s.scene, s.n_items, COALESCE(i.n_users, 0), COALESCE(i.n_inter, 0)
               FROM (SELECT scene, COUNT(*) AS n_items FROM items GROUP BY scene) s
               LEFT JOIN (SELECT scene, COUNT(DISTINCT user_id) AS n_users, COUNT(*) AS n_inter
                          FROM interactions GROUP BY scene) i ON i.scene = s.scene
               ORDER BY s.scene"""
        )
        return [SceneInfo(scene=r[0], items=r[1], users=r[2], interactions=r[3]) for r in rows]

    def item_scenes(self) -> dict[str, str]:
        """item_id -> scene for every stored item (what catalog readers validate against)."""
        return dict(self._conn.execute("SELECT item_id, scene FROM items"))

    def count_items(self, scene: str | None = None) -> int:
        if scene is None:
            return self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM items WHERE scene = ?", (scene,)).fetchone()[0]

    def items_in_scene(self, scene: str) -> list[Item]:
        rows = self._conn.execute(
            "SELECT item_id, scene, title, text FROM items WHERE scene = ? ORDER BY item_id", (scene,)
        )
        return [Item(item_id=r[0], scene=r[1], title=r[2], text=r[3]) for r in rows]

    def hashes_in_scene(self, scene: str) -> dict[str, str]:
        """item_id -> content hash, ordered by item id."""
        return dict(
            self._conn.execute(
                "SELECT item_id, content_hash FROM items WHERE scene = ? ORDER BY item_id", (scene,)
            )
        )

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for start in range(0, len(item_ids), 500):
            chunk = list(item_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for r in self._conn.execute(
                f"SELECT item_id, scene, title, text FROM items WHERE item_id IN ({marks})", chunk
            ):
                found[r[0]] = Item(item_id=r[0], scene=r[1], title=r[2], text=r[3])
        return found

    def content_hashes(self, item_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(item_ids), 500):
            chunk = list(item_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(
                self._conn.execute(
                    f"SELECT item_id, content_hash FROM items WHERE item_id IN ({marks})", chunk
                )
            )
        return found

    def has_user(self, user_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM interactions WHERE user_id = ? LIMIT 1", (user_id,))
        return row.fetchone() is not None

    def users(self, limit: int | None = None) -> list[str]:
        sql = "SELECT DISTINCT user_id FROM interactions ORDER BY user_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [r[0] for r in self._conn.execute(sql)]

    def history(self, user_id: str) -> UserHistory:
        rows = self._conn.execute(
            """SELECT i.item_id, i.scene, it.title, i.position FROM interactions i
               JOIN items it ON it.item_id = i.item_id WHERE i.user_id = ? ORDER BY i.position""",
            (user_id,),
        )
        entries = [HistoryEntry(item_id=r[0], scene=r[1], title=r[2], position=r[3]) for r in rows]
        return UserHistory(user_id=user_id, entries=entries)

    def history_from_ids(self, user_id: str, item_ids: Sequence[str]) -> UserHistory:
        """A history given as item ids (an evaluation case, a session); unknown ids are dropped."""
        items = self.get_items(list(dict.fromkeys(item_ids)))
        entries = [
            HistoryEntry(item_id=i, scene=items[i].scene, title=items[i].title, position=p)
            for p, i in enumerate(item_ids)
            if i in items
        ]
        return UserHistory(user_id=user_id, entries=entries)

    def popularity(self, scene: str) -> dict[str, int]:
        """item_id -> number of interactions, for the items of a scene that have any."""
        return dict(
            self._conn.execute(
                "SELECT item_id, COUNT(*) FROM interactions WHERE scene = ? GROUP BY item_id", (scene,)
            )
        )

    def cases(self, split: str | None = None) -> list[Case]:
        sql = "SELECT case_id, split, user_id, target_scene, target_item, history FROM cases"
        params: tuple[str, ...] = ()
        if split is not None:
            sql += " WHERE split = ?"
            params = (split,)
        return [
            Case(
                case_id=r[0], split=r[1], user_id=r[2], target_scene=r[3], target_item=r[4],
                history=json.loads(r[5]),
            )
            for r in self._conn.execute(sql + " ORDER BY case_id", params)
        ]

    def counts(self) -> dict[str, int]:
        """Row counts of every table: what an ingest must leave identical when repeated."""
        return {
            table: self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("items", "interactions", "cases")
        }


def read_histories(catalog_db: Path) -> dict[str, list[str]]:
    """Every stored user's history (item ids, oldest first), in one read-only query."""
    conn = sqlite3.connect(f"file:{catalog_db}?mode=ro", uri=True)
    try:
        histories: dict[str, list[str]] = {}
        for user_id, item_id in conn.execute(
            "SELECT user_id, item_id FROM interactions ORDER BY user_id, position"
        ):
            histories.setdefault(user_id, []).append(item_id)
        return histories
    finally:
        conn.close()
