"""The embedding cache: one SQLite file of float32 vectors keyed by (model, content hash).

A text is encoded once per model, ever: re-ingesting an unchanged catalog encodes nothing, and a run
that is interrupted keeps every chunk it finished, so the next run resumes where it stopped.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import StoreError
from .sqlite_util import connect, migrate

if TYPE_CHECKING:
    from .embeddings import Encoder

ENCODE_CHUNK = 512  # texts encoded (and committed) at a time by encode_with_cache
_SQL_VARIABLES = 900  # stay below SQLite's bound-parameter limit on old builds


def m001_initial(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE embeddings (
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            dimension INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID
        """
    )


MIGRATIONS = [m001_initial]


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class EmbeddingCache:
    """Vectors by (model, content_hash); safe to share between threads of one process and between processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = connect(self.path)
        self._lock = threading.Lock()
        try:
            migrate(self._conn, MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"cannot use embedding cache {self.path}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"embedding cache {self.path} is closed")
        return self._conn

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `hashes` (missing ones are left out)."""
        unique = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for chunk in _chunks(unique, _SQL_VARIABLES):
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT content_hash, dimension, vector FROM embeddings "
                    f"WHERE model = ? AND content_hash IN ({marks})",
                    (model, *chunk),
                )
                for content_hash, dimension, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape[0] != dimension:
                        continue  # a torn or foreign row: treat as missing, it gets re-encoded
                    found[content_hash] = vector.copy()
        return found

    def put_many(self, model: str, mapping: Mapping[str, np.ndarray]) -> None:
        """Store vectors, replacing any under the same key, in one transaction."""
        if not mapping:
            return
        rows = []
        for content_hash, vector in mapping.items():
            flat = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
            rows.append((model, content_hash, int(flat.shape[0]), flat.tobytes()))
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (model, content_hash, dimension, vector) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count(self, model: str | None = None) -> int:
        """Vectors stored, for one model or for all."""
        with self._lock:
            if model is None:
                row = self.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = self.conn.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()
        return int(row[0])

    def models(self) -> dict[str, int]:
        """Vectors stored per model name."""
        with self._lock:
            rows = self.conn.execute("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY model")
            return {model: int(n) for model, n in rows}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_with_cache(
    encoder: Encoder,
    cache: EmbeddingCache,
    texts_by_hash: Mapping[str, str],
    *,
    show_progress: bool = False,
    chunk_size: int = ENCODE_CHUNK,
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every hash, encoding only those not cached; returns them and how many were encoded.

    New vectors are committed every `chunk_size` texts, so an interrupted run loses at most one chunk.
    """
    vectors = cache.get_many(encoder.name, list(texts_by_hash))
    missing = [h for h in texts_by_hash if h not in vectors]
    if not missing:
        return vectors, 0
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(missing), desc=f"encoding with {encoder.name}", unit="text")
    try:
        for chunk in _chunks(missing, max(1, chunk_size)):
            matrix = np.asarray(encoder.encode([texts_by_hash[h] for h in chunk]), dtype=np.float32)
            if matrix.shape[0] != len(chunk):
                raise StoreError(f"{encoder.name} returned {matrix.shape[0]} vectors for {len(chunk)} texts")
            fresh = dict(zip(chunk, matrix))
            cache.put_many(encoder.name, fresh)
            vectors.update(fresh)
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if progress is not None:
            progress.close()
    return vectors, len(missing)
