"""Bring the derived stores (chroma collections, BM25 files) into agreement with the item table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embedding_cache import EmbeddingCache, encode_with_cache
from .embeddings import Encoder
from .item_store import ItemStore
from .lexical import FORMAT_VERSION as LEXICAL_FORMAT
from .lexical import BM25Index
from .vector_store import VectorStore


@dataclass
class SceneSync:
    """What syncing one scene changed."""

    scene: str
    upserted: int = 0
    deleted: int = 0
    encoded: int = 0
    lexical_rebuilt: bool = False


def lexical_path(lexical_dir: Path, scene: str) -> Path:
    return lexical_dir / f"{scene}.npz"


def scene_digest(hashes: dict[str, str]) -> str:
    """One hash of a scene's (item id, content hash) pairs: changes when any item changes."""
    h = hashlib.sha256()
    for item_id, content_hash in sorted(hashes.items()):
        h.update(f"{item_id}\t{content_hash}\n".encode())
    return h.hexdigest()


def sync_scene(
    scene: str,
    items: ItemStore,
    vectors: VectorStore,
    cache: EmbeddingCache,
    encoder: Encoder,
    lexical_dir: Path,
    *,
    show_progress: bool = False,
) -> SceneSync:
    """Make the scene's collection and BM25 index hold exactly the scene's items, as stored."""
    report = SceneSync(scene)
    catalog_items = items.items_in_scene(scene)
    wanted = {i.item_id: i.content_hash for i in catalog_items}
    stored = vectors.stored_hashes(scene)

    stale = [i for i in catalog_items if stored.get(i.item_id) != i.content_hash]
    if stale:
        by_hash, report.encoded = encode_with_cache(
            encoder, cache, {i.content_hash: i.document for i in stale}, show_progress=show_progress
        )
        matrix = np.stack([by_hash[i.content_hash] for i in stale])
        vectors.upsert(scene, [i.item_id for i in stale], matrix, [i.content_hash for i in stale])
        report.upserted = len(stale)
    extra = sorted(set(stored) - set(wanted))
    if extra:
        vectors.delete(scene, extra)
        report.deleted = len(extra)

    digest = f"{scene_digest(wanted)}:bm25-v{LEXICAL_FORMAT}"  # a new index format rebuilds too
    path = lexical_path(lexical_dir, scene)
    if items.manifest().get(f"lexical_digest:{scene}") != digest or not path.exists():
        lexical_dir.mkdir(parents=True, exist_ok=True)
        BM25Index.build([i.item_id for i in catalog_items], [i.document for i in catalog_items]).save(path)
        with items.transaction():
            items.set_manifest(**{f"lexical_digest:{scene}": digest})
        report.lexical_rebuilt = True
    return report


def sync_all(
    items: ItemStore,
    vectors: VectorStore,
    cache: EmbeddingCache,
    encoder: Encoder,
    lexical_dir: Path,
    *,
    show_progress: bool = False,
) -> list[SceneSync]:
    """Sync every scene, drop collections of scenes that no longer exist, record the synced version."""
    manifest = items.manifest()
    if manifest.get("vector_model") not in (None, encoder.name):
        for scene in vectors.scenes():
            vectors.drop(scene)
    scenes = items.scenes()
    reports = [
        sync_scene(scene, items, vectors, cache, encoder, lexical_dir, show_progress=show_progress)
        for scene in scenes
    ]
    for scene in set(vectors.scenes()) - set(scenes):
        vectors.drop(scene)
    with items.transaction():
        items.set_manifest(synced_version=items.version(), vector_model=encoder.name)
    return reports
