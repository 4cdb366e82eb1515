"""Ingest a catalog: validate all of it, encode it, then write the stores (all or nothing)."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from ..catalog import load_catalog
from ..paths import DataPaths
from ..settings import Settings
from .embedding_cache import EmbeddingCache, encode_with_cache
from .embeddings import Encoder, make_encoder
from .item_store import ItemStore
from .sync import sync_all
from .vector_store import VectorStore


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


def ingest_catalog(
    catalog_path: Path,
    settings: Settings,
    *,
    scene: str | None = None,
    encoder: Encoder | None = None,
) -> IngestReport:
    """Validate the whole catalog before writing anything; then encode, write, and sync indexes.

    A catalog error raises before the first write. Vectors go to the embedding cache as they are
    made, so a rerun after an interruption encodes only what is missing.
    """
    started = time.perf_counter()
    paths = DataPaths(settings.data_dir)
    paths.ensure()
    items = ItemStore(paths.catalog_db)
    cache = EmbeddingCache(paths.embedding_cache_db)
    try:
        catalog = load_catalog(Path(catalog_path), scene=scene, known_items=items.item_scenes())
        encoder = encoder or make_encoder(settings.embedding)
        _, encoded = encode_with_cache(
            encoder,
            cache,
            {i.content_hash: i.document for i in catalog.items},
            show_progress=settings.embedding.show_progress,
        )
        with items.transaction():
            items.upsert_items(catalog.items)
            items.replace_histories(catalog.interactions)
            items.upsert_cases(catalog.cases)
            version = items.version() + 1
            items.set_manifest(version=version)
        vectors = VectorStore(settings.stores, paths.chroma_dir)
        synced = sync_all(items, vectors, cache, encoder, paths.lexical_dir)
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
        )
    finally:
        cache.close()
        items.close()
