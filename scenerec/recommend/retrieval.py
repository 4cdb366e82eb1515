"""The pipeline's retrieval steps: a history becomes a query (a vector and BM25 words), the query becomes
candidate lists (exact dense top-N, BM25 top-N), the lists are fused by reciprocal rank, and each
candidate gets the history items nearest to it as evidence.

`fused_candidates` is the one implementation of "dense top-N + BM25 top-N, fused by reciprocal rank"
behind `Recommender.recommend` (a batch of one), `Recommender.score_batch` and the evaluation's fused
methods, so they agree by construction. The dense lists come from the exact scene index (one matrix
product for the batch), the BM25 lists from the scene's BM25 index.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..models import Evidence, Item, Recommendation, UserHistory
from ..settings import RetrievalSettings
from ..stores.scene_index import TopK


@dataclass
class Candidate:
    """One candidate item with where it came from."""

    item_id: str
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None


class DenseIndex(Protocol):
    """What retrieval needs of an exact vector index (a `SceneIndex`, or the transfer model's item space)."""

    @property
    def ids(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> TopK: ...


class LexicalIndex(Protocol):
    """What retrieval needs of a BM25 index."""

    def search(
        self, query: str, top_n: int, exclude: Collection[str] = ...
    ) -> list[tuple[str, float]]: ...


# --- history -> query ---


def recency_weights(n: int, decay: float) -> np.ndarray:
    """Weights for a history of n items, oldest first: the newest weighs 1, each older one `decay` less."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def mean_query(vectors: np.ndarray, decay: float) -> np.ndarray | None:
    """The untrained query vector: the recency-weighted mean of normalised item vectors, renormalised;
    None for an empty history."""
    if len(vectors) == 0:
        return None
    weights = recency_weights(len(vectors), decay)
    query = (weights[:, None] * vectors.astype(np.float64)).sum(axis=0)
    norm = np.linalg.norm(query)
    if norm == 0:
        return None
    return (query / norm).astype(np.float32)


def lexical_query(history: UserHistory, settings: RetrievalSettings) -> str:
    """The BM25 query of a history: its most recent titles."""
    return recent_titles_query([e.title for e in history.entries], settings.lexical_history_items)


def recent_titles_query(titles: Sequence[str], n: int) -> str:
    """The last n titles (oldest first) as one BM25 query."""
    return " ".join(titles[-n:]) if n > 0 else ""


# --- query -> candidate lists -> fused candidates ---


def dense_lists(
    index: DenseIndex,
    query_vectors: Sequence[np.ndarray | None],
    n: int,
    excludes: Sequence[Collection[str]],
) -> list[list[str]]:
    """Exact top-n item ids per query vector (none of its exclusions); [] where the vector is None."""
    rows = [r for r, q in enumerate(query_vectors) if q is not None]
    out: list[list[str]] = [[] for _ in query_vectors]
    if not rows or len(index) == 0:
        return out
    matrix = np.stack([query_vectors[r] for r in rows]).astype(np.float32, copy=False)
    found = index.search(matrix, n, [excludes[r] for r in rows])
    ids = index.ids
    for r, positions in zip(rows, found.indices.tolist()):
        out[r] = [ids[p] for p in positions if p >= 0]
    return out


def lexical_lists(
    index: LexicalIndex | None, queries: Sequence[str], n: int, excludes: Sequence[Collection[str]]
) -> list[list[str]]:
    """BM25 top-n item ids per query (none of its exclusions); [] for a blank query or no index."""
    if index is None:
        return [[] for _ in queries]
    return [
        [item_id for item_id, _ in index.search(q, n, exclude=ex)] if q.strip() else []
        for q, ex in zip(queries, excludes)
    ]


def fused_candidates(
    index: DenseIndex,
    lexical: LexicalIndex | None,
    query_vectors: Sequence[np.ndarray | None],
    lexical_queries: Sequence[str],
    excludes: Sequence[Collection[str]],
    n: int,
    settings: RetrievalSettings,
    *,
    keep: int | None = None,
) -> list[list[Candidate]]:
    """Per user, up to `keep` (default n) candidates best first: the dense and BM25 top-n lists (each at
    least the settings' candidate count long) fused by reciprocal rank."""
    dense = dense_lists(index, query_vectors, max(n, settings.dense_candidates), excludes)
    lexical_ids = lexical_lists(lexical, lexical_queries, max(n, settings.lexical_candidates), excludes)
    out = []
    for d, lx in zip(dense, lexical_ids):
        fused = reciprocal_rank_fusion([d, lx], [1.0, settings.lexical_weight], settings.rrf_k)
        out.append(
            [Candidate(item_id=i, score=s, dense_rank=r[0], lexical_rank=r[1]) for i, s, r in fused[: n if keep is None else keep]]
        )
    return out


def reciprocal_rank_fusion(
    ranked_lists: list[list[str]], weights: list[float], k: int
) -> list[tuple[str, float, list[int | None]]]:
    """Fuse ranked id lists: score = sum of weight / (k + rank), rank 1-based; ties broken by id."""
    scores: dict[str, float] = {}
    ranks: dict[str, list[int | None]] = {}
    for list_index, (ids, weight) in enumerate(zip(ranked_lists, weights)):
        for rank, item_id in enumerate(ids, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
            ranks.setdefault(item_id, [None] * len(ranked_lists))[list_index] = rank
    ordered = sorted(scores, key=lambda i: (-scores[i], i))
    return [(i, scores[i], ranks[i]) for i in ordered]


# --- candidates -> explained recommendations ---


def with_nearest_evidence(
    candidates: Sequence[Candidate],
    history: UserHistory,
    candidate_vectors: np.ndarray,
    history_vectors: np.ndarray,
    items: Mapping[str, Item],
    scene: str,
    n_evidence: int,
) -> list[Recommendation]:
    """Candidates as recommendations, each with the `n_evidence` distinct history items nearest to it."""
    if not candidates:
        return []
    similarity = candidate_vectors @ history_vectors.T
    results = []
    for row, candidate in enumerate(candidates):
        order = np.argsort(-similarity[row], kind="stable")
        evidence: list[Evidence] = []
        seen: set[str] = set()
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
