"""Lazily loaded per-scene BM25 indexes, reloaded when their file changes on disk, rebuilt when it is
missing, unreadable or of an old format."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreError
from .lexical import BM25Index

log = logging.getLogger(__name__)

Rebuild = Callable[[str], BM25Index]  # scene -> a fresh index built from the item table (and saved)


class LexicalIndexes:
    """Reads `<lexical_dir>/<scene>.npz` on first use and again after a newer ingest rewrote it.

    With `rebuild`, a file that is missing or that `BM25Index.load` rejects is rebuilt from the item
    table (with a warning) instead of failing the query; without it, a missing file means no BM25.
    """

    def __init__(self, lexical_dir: Path, rebuild: Rebuild | None = None) -> None:
        self._dir = lexical_dir
        self._rebuild = rebuild
        self._loaded: dict[str, tuple[float, BM25Index]] = {}

    def get(self, scene: str) -> BM25Index | None:
        path = self._dir / f"{scene}.npz"
        if not path.exists():
            if self._rebuild is None:
                return None
            log.warning("BM25 index %s is missing: rebuilding it from the item table", path)
            return self._rebuilt(scene, path)
        mtime = path.stat().st_mtime
        cached = self._loaded.get(scene)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, BM25Index.load(path))
            except StoreError as exc:
                if self._rebuild is None:
                    raise
                log.warning("%s: rebuilding it from the item table", exc)
                return self._rebuilt(scene, path)
            self._loaded[scene] = cached
        return cached[1]

    def _rebuilt(self, scene: str, path: Path) -> BM25Index:
        assert self._rebuild is not None
        index = self._rebuild(scene)
        self._loaded[scene] = (path.stat().st_mtime, index)
        return index
