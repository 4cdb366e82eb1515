"""Bring the derived stores (chroma collections, BM25 files) into agreement with the item table.

The item table and the embedding cache are the source of truth; everything here can be redone from
them, so a sync that is killed half-way is finished by the next one. The manifest's `synced_version`
is written last, by `mark_synced`, once the stores have been checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..settings import EmbeddingSettings
from .embedding_cache import EmbeddingCache, encode_with_cache
from .embeddings import Encoder, cache_name, make_encoder
from .item_store import ItemStore
from .lexical import FORMAT_VERSION as LEXICAL_FORMAT
from .lexical import BM25Index
from .vector_store import VectorStore

Stage = Callable[[str], None]  # told where a long write is ("chroma arts 1024"); crash tests hook in here


def _no_stage(stage: str) -> None:
    pass


@dataclass
class SceneSync:
    """What syncing one scene changed."""

    scene: str
    upserted: int = 0
    deleted: int = 0
    encoded: int = 0
    lexical_rebuilt: bool = False


class LazyEncoder(Encoder):
    """An encoder that loads its model on the first `encode`: a sync whose vectors are all cached (a
    re-ingest, a repair, a resumed run) never pays the seconds of loading it."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self._loaded: Encoder | None = None
        self.name = cache_name(settings)  # fails fast when the model is not installed

    @property
    def loaded(self) -> Encoder:
        if self._loaded is None:
            self._loaded = make_encoder(self._settings)
        return self._loaded

    @property  # type: ignore[override]
    def dimension(self) -> int:
        return self.loaded.dimension

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self.loaded.encode(texts, show_progress=show_progress)


def lexical_path(lexical_dir: Path, scene: str) -> Path:
    return lexical_dir / f"{scene}.npz"


def scene_digest(hashes: dict[str, str]) -> str:
    """One hash of a scene's (item id, content hash) pairs: changes when any item changes."""
    h = hashlib.sha256()
    for item_id, content_hash in sorted(hashes.items()):
        h.update(f"{item_id}\t{content_hash}\n".encode())
    return h.hexdigest()


def lexical_digest(items: ItemStore, scene: str) -> str:
    """What the manifest records for an up-to-date BM25 file (a new index format rebuilds too)."""
    return f"{scene_digest(items.hashes_in_scene(scene))}:bm25-v{LEXICAL_FORMAT}"


def rebuild_lexical(scene: str, items: ItemStore, lexical_dir: Path) -> BM25Index:
    """Build a scene's BM25 index from the item table, write it atomically, record its digest."""
    catalog_items = items.items_in_scene(scene)
    lexical_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_files(lexical_dir, scene)
    index = BM25Index.build([i.item_id for i in catalog_items], [i.document for i in catalog_items])
    index.save(lexical_path(lexical_dir, scene))
    with items.transaction():
        items.set_manifest(**{f"lexical_digest:{scene}": lexical_digest(items, scene)})
    return index


def _remove_dead_writers_files(lexical_dir: Path, scene: str) -> None:
    """Temporary files left by a writer killed mid-save (named `.<scene>.npz.<pid>.tmp`)."""
    for leftover in lexical_dir.glob(f".{scene}.npz.*.tmp"):
        pid = leftover.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sync_scene(
    scene: str,
    items: ItemStore,
    vectors: VectorStore,
    cache: EmbeddingCache,
    encoder: Encoder,
    lexical_dir: Path,
    *,
    show_progress: bool = False,
    on_stage: Stage = _no_stage,
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
        vectors.upsert(
            scene, [i.item_id for i in stale], matrix, [i.content_hash for i in stale],
            on_batch=lambda done: on_stage(f"chroma {scene} {done}"),
        )
        report.upserted = len(stale)
    extra = sorted(set(stored) - set(wanted))
    if extra:
        vectors.delete(scene, extra)
        report.deleted = len(extra)

    path = lexical_path(lexical_dir, scene)
    if items.manifest().get(f"lexical_digest:{scene}") != lexical_digest(items, scene) or not path.exists():
        rebuild_lexical(scene, items, lexical_dir)
        on_stage(f"bm25 {scene}")
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
    on_stage: Stage = _no_stage,
    mark: bool = True,
) -> list[SceneSync]:
    """Sync every scene and drop collections of scenes that no longer exist; with `mark`, record the
    synced version (callers that check the stores first pass False and call `mark_synced` after)."""
    manifest = items.manifest()
    if manifest.get("vector_model") not in (None, encoder.name):
        for scene in vectors.scenes():
            vectors.drop(scene)
    scenes = items.scenes()
    reports = [
        sync_scene(
            scene, items, vectors, cache, encoder, lexical_dir, show_progress=show_progress, on_stage=on_stage
        )
        for scene in scenes
    ]
    for scene in set(vectors.scenes()) - set(scenes):
        vectors.drop(scene)
        lexical_path(lexical_dir, scene).unlink(missing_ok=True)
    if mark:
        mark_synced(items, encoder.name)
    return reports


def mark_synced(items: ItemStore, model: str) -> None:
    """Record that the derived stores match the item table's current version (written last)."""
    with items.transaction():
        items.set_manifest(synced_version=items.version(), vector_model=model)
