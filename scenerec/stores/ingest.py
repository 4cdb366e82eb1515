"""Ingest a catalog: validate all of it, encode it, then write the stores (all or nothing).

Crash safety, in order of writing: vectors go to the embedding cache chunk by chunk (a rerun encodes
only what is missing); items, histories and cases land in one SQLite transaction that also bumps the
manifest `version`; the derived stores (chroma, BM25) are synced, checked and repaired; the manifest's
`synced_version` is written last. A process killed anywhere leaves either the old or the new item
table, and derived stores that the next ingest (or the next reader) brings back into agreement.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ..catalog import load_catalog
from ..errors import StoreError
from ..paths import DataPaths
from ..settings import Settings
from .embedding_cache import EmbeddingCache, encode_with_cache
from .embeddings import Encoder
from .integrity import open_or_reset_vectors, sync_checked
from .item_store import ItemStore
from .sync import LazyEncoder, Stage, _no_stage
from .write_lock import WriteLock

INGEST_ENGINES = ("local", "ray")  # where the encoding stage runs: this process, or Ray Data
WRITE_LOCK_WAIT_S = 600.0  # a second ingest waits for the first rather than failing at once


class IngestReport(BaseModel):
    """What one ingest did."""

    source: str
    scenes: list[str]
    items: int
    interactions: int
    cases: int
    encoded: int
    upserted_vectors: int
    seconds: float
    version: int
    repaired: list[str] = []


class _StagedEncoder(Encoder):
    """Reports a stage before each chunk it encodes (the chunks before it are already cached)."""

    def __init__(self, inner: Encoder, on_stage: Stage) -> None:
        self._inner = inner
        self._on_stage = on_stage
        self._done = 0
        self.name = inner.name

    @property  # type: ignore[override]
    def dimension(self) -> int:
        return self._inner.dimension

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self._on_stage(f"encode {self._done}")
        vectors = self._inner.encode(texts, show_progress=show_progress)
        self._done += len(texts)
        return vectors


def ingest_catalog(
    catalog_path: Path,
    settings: Settings,
    *,
    scene: str | None = None,
    encoder: Encoder | None = None,
    on_stage: Stage = _no_stage,
    engine: str = "local",
    address: str | None = None,
) -> IngestReport:
    """Validate the whole catalog before writing anything; then encode, write, and sync indexes.

    A catalog error raises before the first write. Only one ingest writes a data directory at a time
    (a second one waits). `on_stage` is told where the ingest is ("encode 512", "items", "chroma arts
    1024", "synced"): progress for a UI, kill points for the crash tests. `engine="ray"` encodes on
    Ray Data (`stores.ray_encoding`, `address` a cluster to join); this process still writes everything.
    """
    if engine not in INGEST_ENGINES:
        raise StoreError(f"unknown ingest engine {engine!r}: choose one of {', '.join(INGEST_ENGINES)}")
    started = time.perf_counter()
    paths = DataPaths(settings.data_dir)
    paths.ensure()
    lock = WriteLock(paths.root)
    lock.acquire(WRITE_LOCK_WAIT_S)
    items = cache = None
    try:
        items = ItemStore(paths.catalog_db)
        cache = EmbeddingCache(paths.embedding_cache_db)
        catalog = load_catalog(Path(catalog_path), scene=scene, known_items=items.item_scenes())
        on_stage("validated")
        encoder = _StagedEncoder(encoder or LazyEncoder(settings.embedding), on_stage)
        texts = {i.content_hash: i.document for i in catalog.items}
        if engine == "ray":
            from .ray_encoding import encode_with_ray

            _, encoded = encode_with_ray(settings.embedding, cache, texts, address=address,
                                         on_batch=lambda done: on_stage(f"encode {done}"))
        else:
            _, encoded = encode_with_cache(encoder, cache, texts, show_progress=settings.embedding.show_progress)
        with items.transaction():
            items.upsert_items(catalog.items)
            on_stage("items")
            items.replace_histories(catalog.interactions)
            on_stage("histories")
            items.upsert_cases(catalog.cases)
            version = items.version() + 1
            items.set_manifest(version=version)
        on_stage("committed")
        vectors, reset = open_or_reset_vectors(settings.stores, paths.chroma_dir)
        synced, report = sync_checked(
            items, vectors, cache, encoder, paths.lexical_dir,
            show_progress=settings.embedding.show_progress, on_stage=on_stage,
        )
        return IngestReport(
            source=str(catalog_path),
            scenes=catalog.scenes,
            items=len(catalog.items),
            interactions=len(catalog.interactions),
            cases=len(catalog.cases),
            encoded=encoded,
            upserted_vectors=sum(s.upserted for s in synced),
            seconds=round(time.perf_counter() - started, 3),
            version=version,
            repaired=reset + report.repaired,
        )
    finally:
        if cache is not None:
            cache.close()
        if items is not None:
            items.close()
        lock.release()
