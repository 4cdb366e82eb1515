"""Lazily loaded per-scene BM25 indexes, reloaded when their file changes on disk."""

from __future__ import annotations

from pathlib import Path

from .lexical import BM25Index


class LexicalIndexes:
    """Reads `<lexical_dir>/<scene>.npz` on first use and again after a newer ingest rewrote it."""

    def __init__(self, lexical_dir: Path) -> None:
        self._dir = lexical_dir
        self._loaded: dict[str, tuple[float, BM25Index]] = {}

    def get(self, scene: str) -> BM25Index | None:
        path = self._dir / f"{scene}.npz"
        if not path.exists():
            return None
        mtime = path.stat().st_mtime
        cached = self._loaded.get(scene)
        if cached is None or cached[0] != mtime:
            cached = (mtime, BM25Index.load(path))
            self._loaded[scene] = cached
        return cached[1]
