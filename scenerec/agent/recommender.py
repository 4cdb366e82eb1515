"""The Recommender: the core that the CLI, the TUI, evaluation and batch scoring call."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ..errors import ScenerecError, StoreError, UnknownSceneError, UnknownUserError
from ..models import Evidence, Item, Recommendation, SceneInfo, UserHistory
from ..paths import DataPaths
from ..settings import Settings, load_settings
from ..stores.embedding_cache import EmbeddingCache
from ..stores.embeddings import Encoder, make_encoder
from ..stores.item_store import ItemStore
from ..stores.lexical_indexes import LexicalIndexes
from ..stores.sync import sync_all
from ..stores.vector_store import VectorStore
from .profile import mean_profile
from .retrieval import CandidateRetriever, reciprocal_rank_fusion


class ItemHit(BaseModel):
    """One result of `search_items`."""

    item_id: str
    title: str
    scene: str
    score: float


class Recommender:
    """Recommendations for a user in a scene, from their history in every scene."""

    def __init__(self, settings: Settings, encoder: Encoder | None = None) -> None:
        self.settings = settings
        self.paths = DataPaths(settings.data_dir)
        if not self.paths.catalog_db.exists():
            raise StoreError(
                f"no catalog in {self.paths.root}: run `scenerec ingest CATALOG --data-dir {self.paths.root}`"
            )
        self.items = ItemStore(self.paths.catalog_db)
        self.cache = EmbeddingCache(self.paths.embedding_cache_db)
        self.vectors = VectorStore(settings.stores, self.paths.chroma_dir)
        self.lexical = LexicalIndexes(self.paths.lexical_dir)
        self.retriever = CandidateRetriever(self.vectors, self.lexical, settings.retrieval)
        self._encoder = encoder
        self._vector_model = self.items.manifest().get("vector_model")
        if self._needs_sync():
            sync_all(self.items, self.vectors, self.cache, self.encoder, self.paths.lexical_dir)
            self._vector_model = self.encoder.name

    @classmethod
    def open(
        cls, data_dir: Path | str | None = None, settings: Settings | None = None, **kwargs: object
    ) -> Recommender:
        """Open the stores of a data directory (default: the settings' data directory)."""
        settings = settings or load_settings()
        if data_dir is not None:
            settings = settings.model_copy(update={"data_dir": Path(data_dir)})
        return cls(settings, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.items.close()
        self.cache.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def encoder(self) -> Encoder:
        """The text encoder, loaded on first use (only search and re-sync need it)."""
        if self._encoder is None:
            self._encoder = make_encoder(self.settings.embedding)
        return self._encoder

    def _needs_sync(self) -> bool:
        manifest = self.items.manifest()
        return manifest.get("synced_version") != manifest.get("version", "0") or self._vector_model is None

    # --- lookups ---

    def scenes(self) -> list[SceneInfo]:
        return self.items.scene_info()

    def check_scene(self, scene: str) -> None:
        known = self.items.scenes()
        if scene not in known:
            raise UnknownSceneError(scene, known)

    def history(self, user_id: str) -> UserHistory:
        if not self.items.has_user(user_id):
            raise UnknownUserError(user_id)
        return self.items.history(user_id)

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of items, in the order given; (0, d) for none."""
        hashes = self.items.content_hashes(item_ids)
        found = self.cache.get_many(self._vector_model or self.encoder.name, list(set(hashes.values())))
        missing = [i for i in item_ids if hashes.get(i) not in found]
        if missing:
            raise StoreError(f"no stored vector for items {missing[:5]}: run `scenerec ingest` again")
        if not item_ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[hashes[i]] for i in item_ids]).astype(np.float32)

    # --- recommending ---

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.retrieval.max_k:
            raise ScenerecError(f"k must be between 1 and {self.settings.retrieval.max_k}, got {k}")

    def recommend(
        self, user_id: str, scene: str, k: int = 10, *, exclude: Collection[str] = ()
    ) -> list[Recommendation]:
        """Top-k items of `scene` for a stored user; none from their history or `exclude`."""
        self._check_k(k)
        self.check_scene(scene)
        return self.recommend_for_history(self.history(user_id), scene, k, exclude=exclude)

    def recommend_for_history(
        self, history: UserHistory, scene: str, k: int = 10, *, exclude: Collection[str] = ()
    ) -> list[Recommendation]:
        """Top-k items of `scene` for any history (an evaluation case, a chat session)."""
        self._check_k(k)
        self.check_scene(scene)
        exclude = set(exclude) | set(history.item_ids)
        if not history.entries:
            return self.popular(scene, k, exclude=exclude)
        s = self.settings.retrieval
        history_vectors = self.item_vectors(history.item_ids)
        profile = mean_profile(history_vectors, s.recency_decay)
        recent_titles = " ".join(e.title for e in history.entries[-s.lexical_history_items :])
        candidates = self.retriever.candidates(profile, recent_titles, scene, k, exclude)
        return self._with_evidence(candidates, history, history_vectors, scene)

    def _with_evidence(
        self, candidates: Sequence, history: UserHistory, history_vectors: np.ndarray, scene: str
    ) -> list[Recommendation]:
        if not candidates:
            return []
        ids = [c.item_id for c in candidates]
        items = self.items.get_items(ids)
        similarity = self.item_vectors(ids) @ history_vectors.T
        n_evidence = self.settings.retrieval.evidence_items
        results = []
        for row, candidate in enumerate(candidates):
            order = np.argsort(-similarity[row], kind="stable")
            evidence, seen = [], set()
            for j in order:
                entry = history.entries[j]
                if entry.item_id in seen:
                    continue
                seen.add(entry.item_id)
                evidence.append(
                    Evidence(
                        item_id=entry.item_id, title=entry.title, scene=entry.scene,
                        similarity=round(float(similarity[row, j]), 4),
                    )
                )
                if len(evidence) == n_evidence:
                    break
            item = items[candidate.item_id]
            results.append(
                Recommendation(
                    item_id=item.item_id, title=item.title, scene=scene,
                    score=round(candidate.score, 6), source="personalized", evidence=evidence,
                )
            )
        return results

    def popular(self, scene: str, k: int, *, exclude: Collection[str] = ()) -> list[Recommendation]:
        """The scene's most interacted-with items, labelled as popular (no personal evidence)."""
        self._check_k(k)
        self.check_scene(scene)
        counts = self.items.popularity(scene)
        ranked = sorted((i for i in counts if i not in exclude), key=lambda i: (-counts[i], i))[:k]
        if len(ranked) < k:  # a scene with few interactions: fill with the remaining items by id
            rest = (i.item_id for i in self.items.items_in_scene(scene))
            ranked += [i for i in rest if i not in exclude and i not in counts][: k - len(ranked)]
        items = self.items.get_items(ranked)
        top = max(counts.values(), default=1)
        return [
            Recommendation(
                item_id=i, title=items[i].title, scene=scene, score=round(counts.get(i, 0) / top, 6),
                source="popular",
            )
            for i in ranked
        ]

    # --- search ---

    def search_items(self, text: str, scene: str | None = None, k: int = 10) -> list[ItemHit]:
        """Items whose text matches `text`, by fused dense and BM25 rank, across scenes or in one."""
        self._check_k(k)
        scenes = [scene] if scene else self.items.scenes()
        if scene:
            self.check_scene(scene)
        query = self.encoder.encode([text])[0]
        hits: list[tuple[str, float]] = []
        for name in scenes:
            dense = [i for i, _ in self.vectors.query(name, query[None, :], k)[0]]
            lexical = self.retriever.lexical(text, name, k, ())
            hits += [(i, s) for i, s, _ in reciprocal_rank_fusion([dense, lexical], [1.0, 1.0], 60)[:k]]
        hits.sort(key=lambda h: (-h[1], h[0]))
        items: dict[str, Item] = self.items.get_items([i for i, _ in hits[:k]])
        return [
            ItemHit(item_id=i, title=items[i].title, scene=items[i].scene, score=round(s, 6))
            for i, s in hits[:k]
        ]
