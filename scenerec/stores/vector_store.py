"""The vector store: one chromadb collection per scene, embedded on disk or on a chroma server.

Vectors are always passed in: chromadb would fetch its own ONNX model from the network for any
`documents=`/`query_texts=` call. chroma is an index, not the source of truth; it can always be
rebuilt from the item table and the embedding cache (see `stores.sync`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..settings import StoreSettings

COLLECTION_PREFIX = "scene-"
_PAGE = 5000


def collection_name(scene: str) -> str:
    return f"{COLLECTION_PREFIX}{scene}"


def _client(settings: StoreSettings, chroma_dir: Path) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    try:
        if settings.chroma_host:
            return chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
            )
        return chromadb.PersistentClient(path=str(chroma_dir), settings=chroma_settings)
    except Exception as exc:  # chromadb raises bare ValueError/Exception for connection and file problems
        if not settings.chroma_host:
            forget_client(chroma_dir)  # chromadb caches the half-made system; a retry must start afresh
        where = f"{settings.chroma_host}:{settings.chroma_port}" if settings.chroma_host else chroma_dir
        raise StoreError(f"cannot open the chroma store at {where}: {exc}") from exc


def forget_client(chroma_dir: Path) -> None:
    """Drop this process's cached chroma system for `chroma_dir`, so the next client reads the disk again.

    chromadb keeps one system per path per process, and a system that has served a query keeps serving
    its in-memory HNSW index: vectors another process added later are counted but never returned.
    Only this path's entry is dropped: clients of other paths in the process stay usable.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    # not stopped: clients made from it earlier keep working (on what they read) until they reopen
    SharedSystemClient._identifier_to_system.pop(str(chroma_dir), None)
    SharedSystemClient._identifier_to_refcount.pop(str(chroma_dir), None)


@contextmanager
def _chroma_errors(what: str) -> Iterator[None]:
    """chromadb raises InternalError/ValueError/bare Exception for damaged files: one StoreError instead."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{what}: {exc} (run `scenerec check --repair`)") from exc


class VectorStore:
    """Per-scene collections of normalised item vectors in cosine space."""

    def __init__(self, settings: StoreSettings, chroma_dir: Path) -> None:
        self._settings = settings
        self.chroma_dir = Path(chroma_dir)
        self._client = _client(settings, self.chroma_dir)
        self._collections: dict[str, Any] = {}

    @property
    def embedded(self) -> bool:
        """True for the on-disk store (which this process may reset), False for a chroma server."""
        return not self._settings.chroma_host

    def reopen(self) -> None:
        """Read the store afresh: after another process wrote it, or after a repair."""
        self._collections.clear()
        if self.embedded:
            forget_client(self.chroma_dir)
        self._client = _client(self._settings, self.chroma_dir)

    def reset(self) -> None:
        """Delete every collection (for the embedded store: the whole folder) before a full rebuild."""
        self._collections.clear()
        if not self.embedded:
            for scene in self.scenes():
                self._client.delete_collection(collection_name(scene))
            return
        forget_client(self.chroma_dir)
        shutil.rmtree(self.chroma_dir, ignore_errors=True)
        self._client = _client(self._settings, self.chroma_dir)

    def _collection(self, scene: str) -> Any:
        if scene not in self._collections:
            self._collections[scene] = self._client.get_or_create_collection(
                collection_name(scene), configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
        return self._collections[scene]

    def scenes(self) -> list[str]:
        with _chroma_errors("chroma collections cannot be listed"):
            names = [c if isinstance(c, str) else c.name for c in self._client.list_collections()]
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    def count(self, scene: str) -> int:
        with _chroma_errors(f"chroma collection {collection_name(scene)} cannot be counted"):
            return self._collection(scene).count()

    def upsert(
        self,
        scene: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        hashes: Sequence[str],
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Add or replace vectors; each carries the content hash of the text it was made from.

        `on_batch` is called with the number of vectors written after each batch.
        """
        collection = self._collection(scene)
        batch = max(1, min(self._client.get_max_batch_size(), 1024))
        for start in range(0, len(ids), batch):
            stop = start + batch
            collection.upsert(
                ids=list(ids[start:stop]),
                embeddings=np.ascontiguousarray(vectors[start:stop], dtype=np.float32),
                metadatas=[{"content_hash": h} for h in hashes[start:stop]],
            )
            if on_batch is not None:
                on_batch(min(stop, len(ids)))

    def delete(self, scene: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _PAGE):
            self._collection(scene).delete(ids=list(ids[start : start + _PAGE]))

    def drop(self, scene: str) -> None:
        """Delete a scene's collection entirely (before a rebuild)."""
        self._collections.pop(scene, None)
        if scene in self.scenes():
            self._client.delete_collection(collection_name(scene))

    def hashes_of(self, scene: str, ids: Sequence[str]) -> dict[str, str]:
        """item_id -> content hash of those of `ids` that the scene's collection holds."""
        with _chroma_errors(f"chroma collection {collection_name(scene)} cannot be read"):
            page = self._collection(scene).get(ids=list(ids), include=["metadatas"])
        return {i: (m or {}).get("content_hash", "") for i, m in zip(page["ids"], page["metadatas"])}

    def stored_hashes(self, scene: str) -> dict[str, str]:
        """item_id -> content hash of every vector in the scene's collection."""
        collection = self._collection(scene)
        found: dict[str, str] = {}
        offset = 0
        while True:
            with _chroma_errors(f"chroma collection {collection_name(scene)} cannot be read"):
                page = collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            for item_id, meta in zip(page["ids"], page["metadatas"]):
                found[item_id] = (meta or {}).get("content_hash", "")
            if len(page["ids"]) < _PAGE:
                return found
            offset += _PAGE

    def query(self, scene: str, vectors: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """For each query vector, up to n (item_id, cosine similarity) pairs, best first."""
        with _chroma_errors(f"chroma collection {collection_name(scene)} cannot be searched"):
            collection = self._collection(scene)
            size = collection.count()
            if size == 0 or n <= 0:
                return [[] for _ in range(len(vectors))]
            result = collection.query(
                query_embeddings=np.ascontiguousarray(vectors, dtype=np.float32),
                n_results=min(n, size),
                include=["distances"],
            )
        return [
            [(item_id, 1.0 - float(dist)) for item_id, dist in zip(ids, dists)]
            for ids, dists in zip(result["ids"], result["distances"])
        ]
