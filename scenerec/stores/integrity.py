"""Check the derived stores (chroma collections, BM25 files) against the item table and the embedding
cache, and rebuild what disagrees.

chromadb fails quietly: with a collection's HNSW folder deleted, `count()` is unchanged while a query
returns 1 of 5 neighbours; a truncated HNSW or sqlite file raises obscure errors on first use. So the
check asks each collection the questions a user's query would: how many vectors (against the item
table), whether a sample of ids is there with the right content hash, and whether querying with those
items' own vectors returns a full list headed by the item itself.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ..errors import StoreError
from ..settings import EmbeddingSettings, StoreSettings
from .embedding_cache import EmbeddingCache
from .embeddings import Encoder
from .item_store import ItemStore
from .lexical import BM25Index
from .sync import (
    SceneSync,
    Stage,
    _no_stage,
    lexical_path,
    mark_synced,
    rebuild_lexical,
    sync_all,
    sync_scene,
)
from .vector_store import VectorStore, forget_client

log = logging.getLogger(__name__)

PROBE_NEIGHBOURS = 5
SELF_SIMILARITY = 0.99  # an item's own vector must come back (near) 1.0: duplicates tie, they do not lose


class Problem(BaseModel):
    """One disagreement between a derived store and the source of truth."""

    store: Literal["chroma", "bm25"]
    scene: str | None = Field(description="None: the whole store (it cannot be opened or listed).")
    detail: str

    def __str__(self) -> str:
        where = f"{self.store} {self.scene}" if self.scene else self.store
        return f"{where}: {self.detail}"


class IntegrityReport(BaseModel):
    """What `check_stores` found and, when asked to, what `repair_stores` rebuilt."""

    problems: list[Problem] = Field(default_factory=list)
    repaired: list[str] = Field(default_factory=list, description="What was rebuilt, one line each.")
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def open_vectors(settings: StoreSettings, chroma_dir: Path) -> tuple[VectorStore | None, Problem | None]:
    """The vector store, or the problem that stops it opening (e.g. a truncated chroma.sqlite3)."""
    try:
        return VectorStore(settings, chroma_dir), None
    except StoreError as exc:
        return None, Problem(store="chroma", scene=None, detail=str(exc))


def _sample(ids: list[str], size: int, seed: int) -> list[str]:
    """The first and last ids plus a seeded random few: cheap, and different from one version to the next."""
    if len(ids) <= size:
        return list(ids)
    picks = {ids[0], ids[-1], *random.Random(seed).sample(ids, size - 2)}
    return sorted(picks)


def check_vectors(
    items: ItemStore, vectors: VectorStore, cache: EmbeddingCache, model: str, *, sample: int = 8
) -> list[Problem]:
    """Each scene's collection against the item table: count, a sample of ids and hashes, a query probe."""
    try:
        stored_scenes = set(vectors.scenes())
    except Exception as exc:  # chromadb: bare errors from a damaged sqlite file
        return [Problem(store="chroma", scene=None, detail=f"cannot list collections: {exc}")]
    problems = []
    scenes = items.scenes()
    for scene in sorted(stored_scenes - set(scenes)):
        problems.append(Problem(store="chroma", scene=scene, detail="collection of a scene not in the catalog"))
    seed = items.version()
    for scene in scenes:
        if scene not in stored_scenes:
            problems.append(Problem(store="chroma", scene=scene, detail="collection missing"))
            continue
        try:
            detail = _check_collection(scene, items, vectors, cache, model, sample, seed)
        except StoreError as exc:
            detail = str(exc)
        if detail is not None:
            problems.append(Problem(store="chroma", scene=scene, detail=detail))
    return problems


def _check_collection(
    scene: str, items: ItemStore, vectors: VectorStore, cache: EmbeddingCache, model: str, sample: int,
    seed: int,
) -> str | None:
    hashes = items.hashes_in_scene(scene)
    count = vectors.count(scene)
    if count != len(hashes):
        return f"holds {count} vectors, the item table {len(hashes)} items"
    if not hashes:
        return None
    picks = _sample(list(hashes), sample, seed)
    found = vectors.hashes_of(scene, picks)
    wrong = [i for i in picks if found.get(i) != hashes[i]]
    if wrong:
        return f"{len(wrong)} of {len(picks)} sampled items missing or stale (e.g. {wrong[0]!r})"
    cached = cache.get_many(model, [hashes[i] for i in picks])
    probes = [i for i in picks if hashes[i] in cached]
    if not probes:
        return None  # nothing to probe with; the next sync re-encodes
    want = min(PROBE_NEIGHBOURS, count)
    rows = vectors.query(scene, np.stack([cached[hashes[i]] for i in probes]), want)
    for item_id, row in zip(probes, rows):
        if len(row) < want:
            return f"a query returned {len(row)} of {want} neighbours (HNSW index files missing or damaged)"
        if row[0][1] < SELF_SIMILARITY:
            return f"querying item {item_id!r} with its own vector does not find it (best {row[0][1]:.3f})"
    return None


def check_lexical(items: ItemStore, lexical_dir: Path, *, full: bool = True) -> list[Problem]:
    """Each scene's BM25 file: present, and with `full`, readable and holding exactly the scene's ids."""
    problems = []
    for scene in items.scenes():
        path = lexical_path(lexical_dir, scene)
        if not path.exists():
            problems.append(Problem(store="bm25", scene=scene, detail=f"{path.name} missing"))
            continue
        if not full:
            continue
        try:
            index = BM25Index.load(path)
        except StoreError as exc:
            problems.append(Problem(store="bm25", scene=scene, detail=str(exc)))
            continue
        if sorted(index.ids) != list(items.hashes_in_scene(scene)):
            problems.append(
                Problem(store="bm25", scene=scene, detail=f"indexes {len(index)} documents, not the scene's items")
            )
    return problems


def check_stores(
    items: ItemStore,
    vectors: VectorStore | None,
    cache: EmbeddingCache,
    model: str,
    lexical_dir: Path,
    *,
    open_problem: Problem | None = None,
    full: bool = True,
    sample: int = 8,
) -> IntegrityReport:
    """Every derived store against the source of truth; `vectors` None with the `open_problem` that
    stopped it opening. `full` also reads every BM25 file (the quick check only sees that they exist)."""
    started = time.perf_counter()
    problems = [open_problem] if open_problem is not None else []
    if vectors is not None:
        problems += check_vectors(items, vectors, cache, model, sample=sample)
    problems += check_lexical(items, lexical_dir, full=full)
    return IntegrityReport(problems=problems, seconds=round(time.perf_counter() - started, 3))


def repair_stores(
    report: IntegrityReport,
    items: ItemStore,
    vectors: VectorStore,
    cache: EmbeddingCache,
    encoder: Encoder,
    lexical_dir: Path,
) -> list[str]:
    """Rebuild what `report` found wrong from the item table and the embedding cache; returns what was
    done. Call with the data directory's `WriteLock` held. Vectors are re-encoded only if not cached."""
    done: list[str] = []
    chroma = [p for p in report.problems if p.store == "chroma"]
    if any(p.scene is None for p in chroma):
        vectors.reset()
        done.append("chroma store deleted and rebuilt from the item table and the embedding cache")
        chroma = []
        scenes_to_sync = items.scenes()
    else:
        scenes_to_sync = []
        known = set(items.scenes())
        for problem in chroma:
            assert problem.scene is not None
            try:
                vectors.drop(problem.scene)
            except Exception:  # chromadb cannot even delete it: start the whole store afresh
                vectors.reset()
                done.append("chroma store deleted and rebuilt from the item table and the embedding cache")
                scenes_to_sync = items.scenes()
                break
            if problem.scene in known:
                scenes_to_sync.append(problem.scene)
                done.append(f"chroma collection of scene {problem.scene!r} rebuilt ({problem.detail})")
            else:
                done.append(f"chroma collection of unknown scene {problem.scene!r} dropped")
    for scene in dict.fromkeys(scenes_to_sync):
        sync_scene(scene, items, vectors, cache, encoder, lexical_dir)
    for problem in report.problems:
        if problem.store == "bm25" and problem.scene is not None:
            rebuild_lexical(problem.scene, items, lexical_dir)
            done.append(f"BM25 index of scene {problem.scene!r} rebuilt ({problem.detail})")
    if done:
        with items.transaction():  # other processes see a new epoch and reopen their chroma clients
            items.set_manifest(vectors_epoch=items.vectors_epoch() + 1)
    return done


def open_or_reset_vectors(settings: StoreSettings, chroma_dir: Path) -> tuple[VectorStore, list[str]]:
    """The vector store; an embedded one that cannot be opened (a truncated chroma.sqlite3) is deleted
    and started empty, to be refilled from the item table. Returns it and what was done."""
    vectors, problem = open_vectors(settings, chroma_dir)
    if vectors is not None:
        return vectors, []
    assert problem is not None
    if settings.chroma_host:
        raise StoreError(problem.detail)  # a server we cannot reach is not ours to delete
    log.warning("%s; deleting it and rebuilding from the item table", problem)
    forget_client(chroma_dir)
    shutil.rmtree(chroma_dir, ignore_errors=True)
    return VectorStore(settings, chroma_dir), [f"chroma store could not be opened ({problem.detail}): rebuilt"]


def sync_checked(
    items: ItemStore,
    vectors: VectorStore,
    cache: EmbeddingCache,
    encoder: Encoder,
    lexical_dir: Path,
    *,
    show_progress: bool = False,
    on_stage: Stage = _no_stage,
) -> tuple[list[SceneSync], IntegrityReport]:
    """Sync, check, repair what the check found, and only then record the synced version.

    Call with the `WriteLock` held. Returns what the sync changed per scene, and what the check found.
    """
    report = IntegrityReport()

    def check_and_repair() -> None:
        found = check_stores(items, vectors, cache, encoder.name, lexical_dir, full=False)
        for problem in found.problems:
            log.warning("store check: %s; rebuilding", problem)
        report.problems += found.problems
        report.repaired += repair_stores(found, items, vectors, cache, encoder, lexical_dir)

    def sync() -> list[SceneSync]:
        return sync_all(items, vectors, cache, encoder, lexical_dir, show_progress=show_progress,
                        on_stage=on_stage, mark=False)

    try:
        synced = sync()
    except StoreError as exc:  # a collection too damaged to read: rebuild what the check finds, sync again
        log.warning("sync failed (%s); checking the stores", exc)
        check_and_repair()
        synced = sync()
    on_stage("verify")
    check_and_repair()
    if report.repaired:
        still = check_stores(items, vectors, cache, encoder.name, lexical_dir, full=False)
        if not still.ok:
            raise StoreError(f"the stores could not be repaired: {still.problems[0]}")
    mark_synced(items, encoder.name)
    on_stage("synced")
    return synced, report


def check_data_dir(
    data_dir: Path, store_settings: StoreSettings, embedding: EmbeddingSettings, *, repair: bool = False
) -> IntegrityReport:
    """The full check of a data directory (every BM25 file read), and with `repair` the rebuild of what
    disagrees, under the write lock; the report's problems are those left after any repair."""
    from ..paths import DataPaths
    from .sync import LazyEncoder
    from .write_lock import WriteLock

    paths = DataPaths(data_dir)
    if not paths.catalog_db.exists():
        raise StoreError(f"no catalog in {paths.root}: run `scenerec ingest CATALOG --data-dir {paths.root}`")
    started = time.perf_counter()
    lock = WriteLock(paths.root)
    if repair:
        lock.acquire(timeout_s=60.0)
    items = ItemStore(paths.catalog_db)
    cache = EmbeddingCache(paths.embedding_cache_db)
    try:
        model = items.manifest().get("vector_model") or LazyEncoder(embedding).name
        vectors, open_problem = open_vectors(store_settings, paths.chroma_dir)
        report = check_stores(items, vectors, cache, model, paths.lexical_dir, open_problem=open_problem)
        if repair and not report.ok:
            repaired: list[str] = []
            if vectors is None:
                vectors, repaired = open_or_reset_vectors(store_settings, paths.chroma_dir)
                report = check_stores(items, vectors, cache, model, paths.lexical_dir)
            encoder = LazyEncoder(embedding)
            repaired += repair_stores(report, items, vectors, cache, encoder, paths.lexical_dir)
            mark_synced(items, encoder.name)
            report = check_stores(items, vectors, cache, model, paths.lexical_dir)
            report.repaired = repaired
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    finally:
        cache.close()
        items.close()
        lock.release()
