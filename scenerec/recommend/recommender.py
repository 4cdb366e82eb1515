"""The Recommender: the core that the CLI, the TUI, evaluation and batch scoring call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from ..errors import ScenerecError, StoreError, UnknownSceneError, UnknownUserError
from ..llm.registry import make_backend
from ..models import Item, Recommendation, SceneInfo, UserHistory
from ..paths import DataPaths
from ..rerank.reranker import RerankResult, rerank_batch
from ..rerank.text_profile import TextProfiler
from ..settings import LLMSettings, Settings, load_settings
from ..stores.embedding_cache import EmbeddingCache
from ..stores.embeddings import Encoder
from ..stores.integrity import (
    IntegrityReport,
    check_stores,
    open_or_reset_vectors,
    open_vectors,
    repair_stores,
    sync_checked,
)
from ..stores.item_store import ItemStore
from ..stores.lexical_indexes import LexicalIndexes
from ..stores.scene_index import SceneIndexes
from ..stores.sync import LazyEncoder, rebuild_lexical
from ..stores.text_profile_store import TextProfileStore
from ..stores.vector_store import VectorStore
from ..stores.write_lock import WriteLock
from ..transfer.loading import checkpoint_stamp, open_transfer
from ..transfer.scorer import TransferScorer
from .attribution import FusedScorer, attributed_recommendations
from .batch_output import BatchScores
from .evidence import Interactions
from .memo import StoreMemo
from .retrieval import (
    Candidate,
    DenseIndex,
    fused_candidates,
    lexical_lists,
    lexical_query,
    mean_query,
    reciprocal_rank_fusion,
)
from .scores import percentile

if TYPE_CHECKING:
    from ..llm.base import LLMBackend

log = logging.getLogger(__name__)


BATCH_ENGINES = ("local", "ray")  # where score_batch runs: this process, or Ray Data (recommend/ray_scoring.py)


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
        self._vectors, self._open_problem = open_vectors(settings.stores, self.paths.chroma_dir)
        self.lexical = LexicalIndexes(
            self.paths.lexical_dir, lambda scene: rebuild_lexical(scene, self.items, self.paths.lexical_dir)
        )
        self._encoder = encoder
        self.last_check: IntegrityReport | None = None  # what the check on open (or refresh) found
        self._transfer: tuple[tuple[int, int], TransferScorer | None] | None = None  # (stamp, model)
        self._interactions: tuple[tuple[str, ...], Interactions] | None = None  # (store stamp, matrix)
        self._memo = StoreMemo()  # per-store-version lookups a request repeats (recommend/memo.py)
        self._vector_model = self.items.manifest().get("vector_model")
        # exact in-memory vectors per scene, rebuilt when the store version changes; chroma stays the
        # durable index and serves `search_items`
        self.scene_indexes = SceneIndexes(
            settings, self.items, self.cache, lambda: self._vector_model or self.encoder.name
        )
        self._stamp = self.items.stamp()
        self._maintain()

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
        """The text encoder, loaded on first encode (only search and re-encoding need the model)."""
        if self._encoder is None:
            self._encoder = LazyEncoder(self.settings.embedding)
        return self._encoder

    @property
    def vectors(self) -> VectorStore:
        """The chroma collections (only `search_items` queries them); StoreError when they cannot be opened."""
        if self._vectors is None:
            self._vectors, self._open_problem = open_vectors(self.settings.stores, self.paths.chroma_dir)
        if self._vectors is None:
            assert self._open_problem is not None
            raise StoreError(f"{self._open_problem.detail} (run `scenerec check --repair`)")
        return self._vectors

    def _needs_sync(self) -> bool:
        manifest = self.items.manifest()
        return manifest.get("synced_version") != manifest.get("version", "0") or self._vector_model is None

    def _maintain(self) -> None:
        """Bring the derived stores up to date and check them (counts, a sample of ids, a query probe),
        rebuilding what disagrees with the item table; a warning says what was rebuilt.

        Only with the data directory's write lock: while another process ingests or repairs, this one
        reads the item table and the embedding cache (always consistent) and leaves chroma to it.
        """
        lock = WriteLock(self.paths.root)
        if not lock.try_acquire():
            return
        try:
            if self._vectors is None:
                self._vectors, reset = open_or_reset_vectors(self.settings.stores, self.paths.chroma_dir)
                self._open_problem = None
                for line in reset:
                    log.warning("%s", line)
            if self._needs_sync():
                _, report = sync_checked(self.items, self._vectors, self.cache, self.encoder, self.paths.lexical_dir)
                self._vector_model = self.encoder.name
            else:
                report = check_stores(
                    self.items, self._vectors, self.cache, self._vector_model or self.encoder.name,
                    self.paths.lexical_dir, full=False,
                )
                if not report.ok:
                    report.repaired = repair_stores(
                        report, self.items, self._vectors, self.cache, self.encoder, self.paths.lexical_dir
                    )
            for line in report.repaired:
                log.warning("store check: %s", line)
            self.last_check = report
            self._stamp = self.items.stamp()
        finally:
            lock.release()

    def refresh(self) -> None:
        """Notice a newer store (another process ingested or repaired): reopen chroma, re-check.

        A process that has queried a chroma collection keeps answering from its in-memory index, blind
        to vectors another process added since; the manifest stamp tells it to read the disk again.
        """
        stamp = self.items.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._vector_model = self.items.manifest().get("vector_model")
        if self._vectors is not None:
            self._vectors.reopen()
        if self._needs_sync():
            self._maintain()

    # --- lookups ---

    def scenes(self) -> list[SceneInfo]:
        return self.items.scene_info()

    def check_scene(self, scene: str) -> None:
        memo = self._memo.check(self._stamp)
        if memo.scene_names is None:
            memo.scene_names = self.items.scenes()
        known = memo.scene_names
        if scene not in known:
            raise UnknownSceneError(scene, known)

    def history(self, user_id: str) -> UserHistory:
        if not self.items.has_user(user_id):
            raise UnknownUserError(user_id)
        return self.items.history(user_id)

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of items, in the order given; (0, d) for none."""
        if not item_ids:
            return np.zeros((0, 0), dtype=np.float32)
        memo = self._memo.check(self._stamp).vectors

        def load(wanted: list[Hashable]) -> list[np.ndarray]:
            hashes = self.items.content_hashes(wanted)  # type: ignore[arg-type]
            found = self.cache.get_many(self._vector_model or self.encoder.name, list(set(hashes.values())))
            missing = [i for i in wanted if hashes.get(i) not in found]  # type: ignore[call-overload]
            if missing:
                raise StoreError(f"no stored vector for items {missing[:5]}: run `scenerec ingest` again")
            return [found[hashes[i]] for i in wanted]  # type: ignore[index]

        return np.stack(memo.fetch(item_ids, load)).astype(np.float32)

    # --- recommending ---

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.retrieval.max_k:
            raise ScenerecError(f"k must be between 1 and {self.settings.retrieval.max_k}, got {k}")

    def recommend(
        self, user_id: str, scene: str, k: int = 10, *, exclude: Collection[str] = ()
    ) -> list[Recommendation]:
        """Top-k items of `scene` for a stored user; none from their history or `exclude`."""
        self.refresh()
        self._check_k(k)
        self.check_scene(scene)
        return self.recommend_for_history(self.history(user_id), scene, k, exclude=exclude)

    def recommend_for_history(
        self, history: UserHistory, scene: str, k: int = 10, *, exclude: Collection[str] = ()
    ) -> list[Recommendation]:
        """Top-k items of `scene` for any history (an evaluation case, a chat session)."""
        self.refresh()
        self._check_k(k)
        self.check_scene(scene)
        exclude = set(exclude) | set(history.item_ids)
        if not history.entries:
            return self.popular(scene, k, exclude=exclude)
        candidates = self.candidates([history], scene, k, [exclude])[0]
        return self._with_evidence(candidates, history, self.item_vectors(history.item_ids), scene)

    # --- the dense space: how a user becomes a query vector, and the index it is matched against ---

    def user_vectors(self, histories: Sequence[UserHistory], scene: str) -> list[np.ndarray | None]:
        """One query vector per history for `scene` (None: nothing to go on).

        `recommend` and `score_batch` both call this, so a learned user model plugged in here (with
        `dense_index` returning its item space) serves both.
        """
        transfer = self.transfer
        if transfer is not None and transfer.covers(scene):
            return self._transfer_queries(transfer, histories, scene)
        decay = self.settings.retrieval.recency_decay
        ids = list(dict.fromkeys(i for h in histories for i in h.item_ids))
        vectors = self.item_vectors(ids)
        row = {item_id: r for r, item_id in enumerate(ids)}
        return [mean_query(vectors[[row[i] for i in h.item_ids]], decay) for h in histories]

    def _transfer_queries(
        self, transfer: TransferScorer, histories: Sequence[UserHistory], scene: str
    ) -> list[np.ndarray | None]:
        """The transfer model's query rows; a request's history is encoded once (for retrieval) and
        reused by its attribution, so both score the very same row."""
        memo = self._memo.check(self._stamp).queries
        model_stamp = self._transfer[0] if self._transfer is not None else None  # this model's rows only
        keys = [(model_stamp, scene, tuple(h.item_ids)) for h in histories]
        if len(histories) > memo.size:  # a bulk batch (score_batch): nothing to reuse
            return list(transfer.queries([h.item_ids for h in histories], scene))
        return memo.fetch(
            keys, lambda todo: transfer.queries([list(key[2]) for key in todo], scene)  # type: ignore[index]
        )

    def dense_index(self, scene: str) -> DenseIndex:
        """The exact index of the scene's items in the space `user_vectors` returns."""
        transfer = self.transfer
        if transfer is not None and transfer.covers(scene):
            return transfer.index(scene)
        return self.scene_indexes.get(scene)

    @property
    def transfer(self) -> TransferScorer | None:
        """The data directory's trained transfer model; None without a usable checkpoint (a corrupt
        or mismatched one is logged as a warning), when `user_vectors` uses the mean query."""
        stamp = checkpoint_stamp(self)  # reloaded after a new ingest or a new checkpoint
        if self._transfer is None or self._transfer[0] != stamp:
            self._transfer = (stamp, open_transfer(self))
        return self._transfer[1]

    def candidates(
        self, histories: Sequence[UserHistory], scene: str, n: int, excludes: Sequence[Collection[str]]
    ) -> list[list[Candidate]]:
        """Fused dense + BM25 candidates for many histories at once (non-empty ones)."""
        s = self.settings.retrieval
        transfer = self.transfer
        if transfer is not None and transfer.covers(scene):
            weight = s.transfer_lexical_weight
            s = s.model_copy(update={"lexical_weight": transfer.lexical_weight if weight is None else weight})
        return fused_candidates(
            self.dense_index(scene), self.lexical.get(scene), self.user_vectors(histories, scene),
            [lexical_query(h, s) for h in histories], excludes, n, s,
        )

    def score_batch(
        self,
        user_ids: Sequence[str],
        scene: str,
        k: int = 10,
        *,
        out: Path | None = None,
        batch_size: int = 1024,
        progress: Callable[[int], None] | None = None,
        rerank: bool = False,
        backend: LLMBackend | None = None,
        engine: str = "local",
        address: str | None = None,
    ) -> BatchScores:
        """Top-k ids and scores of `scene` for many stored users: what `recommend` returns, in bulk
        (`scores`: the readable percentile within the scene, `raw_scores`: the ranking model's own).

        `engine="ray"` scores on Ray Data instead (`recommend.ray_scoring`; `out` is then a folder of
        parquet parts, `address` a cluster to join), with the same result.

        With `rerank`, the LLM stage (`backend`, default: the configured one) reranks each user's top
        `llm.candidates`; all users of a batch go to the backend together (vLLM batches them). Writes
        a parquet or CSV file (by suffix) when `out` is given; `progress` is called with the number of
        users done after each batch.
        """
        self.refresh()
        self._check_k(k)
        self.check_scene(scene)
        if engine not in BATCH_ENGINES:
            raise ScenerecError(f"unknown batch engine {engine!r}: choose one of {', '.join(BATCH_ENGINES)}")
        if engine == "ray":
            from .ray_scoring import score_with_ray

            if out is None:
                raise ScenerecError("engine='ray' writes a folder of parquet parts: give out=FOLDER")
            return score_with_ray(type(self), self.settings, user_ids, scene, k, Path(out),
                                  batch_size=batch_size, rerank=rerank, address=address)
        if rerank and backend is None:
            backend = make_backend(self.settings.llm)
        result = BatchScores(scene=scene, k=k)
        for start in range(0, len(user_ids), batch_size):
            histories = [self.history(u) for u in user_ids[start : start + batch_size]]
            full = [h for h in histories if h.entries]
            if backend is not None and rerank:
                ranked_lists = self._reranked(full, scene, k, backend)
            else:
                n_items = len(self.dense_index(scene))  # the readable score, as `recommend` shows it
                ranked_lists = [
                    [(c.item_id, percentile(rank, n_items), c.score) for rank, c in enumerate(found, start=1)]
                    for found in self.candidates(full, scene, k, [set(h.item_ids) for h in full])
                ]
            fused = iter(ranked_lists)
            for h in histories:
                if h.entries:
                    ranked = next(fused)
                else:
                    ranked = [(r.item_id, r.score, r.raw_score or 0.0) for r in self.popular(scene, k)]
                result.user_ids.append(h.user_id)
                result.item_ids.append([i for i, _, _ in ranked])
                result.scores.append([s for _, s, _ in ranked])
                result.raw_scores.append([raw for _, _, raw in ranked])
            if progress is not None:
                progress(len(result))
        if out is not None:
            result.write(Path(out))
        return result

    def _reranked(
        self, histories: Sequence[UserHistory], scene: str, k: int, backend: LLMBackend
    ) -> list[list[tuple[str, float, float]]]:
        n = max(k, self.settings.llm.candidates)
        found = self.candidates(histories, scene, n, [set(h.item_ids) for h in histories])
        candidates = [self.with_evidence(c, h, scene) for c, h in zip(found, histories)]
        results = self.rerank_batch(histories, scene, candidates, backend, k=k, explain=False)
        return [[(r.item_id, r.score, r.raw_score or 0.0) for r in result.recommendations[:k]] for result in results]

    # --- the LLM stage ---

    def recommend_explained(
        self,
        user_id: str,
        scene: str,
        k: int,
        backend: LLMBackend,
        settings: LLMSettings | None = None,
        *,
        history: UserHistory | None = None,
        explain: bool = True,
    ) -> RerankResult:
        """`recommend`, then the LLM stage: the top `llm.candidates` retrieved, reranked, the top k explained."""
        settings = settings or self.settings.llm
        history = history if history is not None else self.history(user_id)
        n = max(k, settings.candidates)
        candidates = self.recommend_for_history(history, scene, n)
        if settings.use_profile and settings.profile_query_weight > 0 and history.entries:
            candidates = self._with_text_profile_query(user_id, history, scene, candidates, backend, settings, n)
        return self.rerank_batch(
            [history], scene, [candidates], backend, k=k, settings=settings, explain=explain, subjects=[user_id]
        )[0]

    def rerank_batch(
        self,
        histories: Sequence[UserHistory],
        scene: str,
        candidates_per_user: Sequence[Sequence[Recommendation]],
        backend: LLMBackend,
        *,
        k: int = 10,
        settings: LLMSettings | None = None,
        explain: bool = True,
        subjects: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[RerankResult]:
        """The LLM stage for many users of one scene (what `score_batch(..., rerank=True)` calls), with the
        candidates' texts from the item table and text profiles cached in the data directory."""
        settings = settings or self.settings.llm
        items = self.items.get_items(list(dict.fromkeys(c.item_id for cands in candidates_per_user for c in cands)))
        store = TextProfileStore.for_data_dir(self.settings.data_dir) if settings.use_profile else None
        try:
            return rerank_batch(
                histories, scene, candidates_per_user, backend, settings, items, store=store, k=k,
                explain=explain, subjects=subjects, progress=progress,
            )
        finally:
            if store is not None:
                store.close()

    def _with_text_profile_query(
        self,
        user_id: str,
        history: UserHistory,
        scene: str,
        candidates: list[Recommendation],
        backend: LLMBackend,
        settings: LLMSettings,
        n: int,
    ) -> list[Recommendation]:
        """The candidates fused (reciprocal rank) with the BM25 hits of the user's text profile."""
        with TextProfileStore.for_data_dir(self.settings.data_dir) as store:
            text_profile = TextProfiler(backend, settings, store).profiles([(user_id, history, scene)])[0].text
        index = self.lexical.get(scene)
        if not text_profile or index is None:
            return candidates
        hits = [i for i, _ in index.search(text_profile, n, exclude=set(history.item_ids))]
        fused = reciprocal_rank_fusion(
            [[c.item_id for c in candidates], hits], [1.0, settings.profile_query_weight], self.settings.retrieval.rrf_k
        )[:n]
        return self.with_evidence([Candidate(item_id=i, score=s) for i, s, _ in fused], history, scene)

    def with_evidence(
        self, candidates: Sequence[Candidate], history: UserHistory, scene: str
    ) -> list[Recommendation]:
        """Candidates found some other way (a chat refine, an anchor item) as explained recommendations."""
        if not history.entries:
            items = self.items.get_items([c.item_id for c in candidates])
            n_items = max(len(self.dense_index(scene)), len(candidates))
            return [
                Recommendation(item_id=c.item_id, title=items[c.item_id].title, scene=scene,
                               score=percentile(rank, n_items), raw_score=round(c.score, 6), source="personalized")
                for rank, c in enumerate(candidates, start=1)
            ]
        return self._with_evidence(candidates, history, self.item_vectors(history.item_ids), scene)

    def _with_evidence(
        self, candidates: Sequence[Candidate], history: UserHistory, history_vectors: np.ndarray, scene: str
    ) -> list[Recommendation]:
        """Evidence by leave-one-out through the scorer that ranked the list (recommend/attribution.py)."""
        if not candidates:
            return []
        ids = [c.item_id for c in candidates]
        items = self.items.get_items(list(dict.fromkeys(ids + history.item_ids)))
        return attributed_recommendations(
            candidates, history, scene, scorer=self.list_scorer(scene), items=items,
            cosine=self.item_vectors(ids) @ history_vectors.T, interactions=self.interactions(),
            n_scene_items=len(self.dense_index(scene)), n_evidence=self.settings.retrieval.evidence_items,
        )

    def list_scorer(self, scene: str) -> FusedScorer:
        """What ranks `recommend`'s list for `scene`, as a function of the history (for attribution);
        one per scene, store version and transfer model."""
        scorers = self._memo.check(self._stamp).scorers
        transfer = self.transfer
        kept = scorers.get(scene)
        if kept is None or kept[0][0] is not transfer or kept[0][1] != self.settings.retrieval:
            scorers[scene] = ((transfer, self.settings.retrieval), self._new_list_scorer(scene, transfer))
        return scorers[scene][1]

    def _new_list_scorer(self, scene: str, transfer: TransferScorer | None) -> FusedScorer:
        s = self.settings.retrieval
        index = self.dense_index(scene)
        if transfer is not None and transfer.covers(scene):
            weight = transfer.lexical_weight if s.transfer_lexical_weight is None else s.transfer_lexical_weight
            method, full = "transfer", transfer.index(scene).scores
        else:
            matrix = self.scene_indexes.get(scene).matrix.float().cpu().numpy()
            weight, method = s.lexical_weight, "mean-query"
            full = lambda q: q @ matrix.T
        return FusedScorer(
            method=method + ("+bm25" if weight > 0 else ""), queries=lambda h: self.user_vectors(h, scene),
            full_scores=full, dense_ids=index.ids, lexical=self.lexical.get(scene),
            lexical_query=lambda h: lexical_query(h, s), lexical_weight=weight, rrf_k=s.rrf_k,
            dense_depth=s.dense_candidates, lexical_depth=s.lexical_candidates,
        )

    def interactions(self) -> Interactions:
        """The stored users x items matrix (co-purchase counts), cached per store version."""
        stamp = tuple(self.items.stamp())
        if self._interactions is None or self._interactions[0] != stamp:
            built = Interactions.cached(self.paths.catalog_db, self.paths.root / "evidence", stamp)
            self._interactions = (stamp, built)
        return self._interactions[1]

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
        n_items = max(len(self.scene_indexes.get(scene)), len(ranked))
        return [
            Recommendation(
                item_id=i, title=items[i].title, scene=scene, score=percentile(rank, n_items),
                raw_score=round(counts.get(i, 0) / top, 6), source="popular", method="popularity",
            )
            for rank, i in enumerate(ranked, start=1)
        ]

    # --- search ---

    def search_items(self, text: str, scene: str | None = None, k: int = 10) -> list[ItemHit]:
        """Items whose text matches `text`, by fused dense and BM25 rank, across scenes or in one."""
        self.refresh()
        self._check_k(k)
        scenes = [scene] if scene else self.items.scenes()
        if scene:
            self.check_scene(scene)
        query = self.encoder.encode([text])[0]
        hits: list[tuple[str, float]] = []
        for name in scenes:
            dense = [i for i, _ in self.vectors.query(name, query[None, :], k)[0]]
            lexical = lexical_lists(self.lexical.get(name), [text], k, [()])[0]
            hits += [(i, s) for i, s, _ in reciprocal_rank_fusion([dense, lexical], [1.0, 1.0], 60)[:k]]
        hits.sort(key=lambda h: (-h[1], h[0]))
        items: dict[str, Item] = self.items.get_items([i for i, _ in hits[:k]])
        return [
            ItemHit(item_id=i, title=items[i].title, scene=items[i].scene, score=round(s, 6))
            for i, s in hits[:k]
        ]


def pick_demo_user(recommender: Recommender) -> tuple[str, str]:
    """A user whose history in one scene is thinnest relative to the rest: the case transfer is for."""
    scenes = recommender.items.scenes()
    rows = [(u, recommender.items.history(u).scene_counts()) for u in recommender.items.users()]
    if not rows or not scenes:
        raise ScenerecError("the catalog has no users: ingest interactions first")
    enough = min(8, max(sum(c.values()) for _, c in rows))
    best = min(
        (counts.get(scene, 0) / sum(counts.values()), user_id, scene)
        for user_id, counts in rows
        if sum(counts.values()) >= enough
        for scene in scenes
    )
    return best[1], best[2]
