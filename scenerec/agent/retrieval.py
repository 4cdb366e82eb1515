"""Candidate retrieval: dense top-N from the scene's collection plus BM25 top-N, fused by reciprocal rank."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from ..settings import RetrievalSettings
from ..stores.lexical_indexes import LexicalIndexes
from ..stores.vector_store import VectorStore


@dataclass
class Candidate:
    """One candidate item with where it came from."""

    item_id: str
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None


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


class CandidateRetriever:
    """Finds candidates of one scene for a profile vector and a lexical query."""

    def __init__(self, vectors: VectorStore, lexical: LexicalIndexes, settings: RetrievalSettings) -> None:
        self._vectors = vectors
        self._lexical = lexical
        self._settings = settings

    def dense(self, profile: np.ndarray, scene: str, n: int, exclude: Collection[str]) -> list[str]:
        hits = self._vectors.query(scene, profile[None, :], n + len(exclude))[0]
        return [item_id for item_id, _ in hits if item_id not in exclude][:n]

    def lexical(self, query: str, scene: str, n: int, exclude: Collection[str]) -> list[str]:
        index = self._lexical.get(scene)
        if index is None or not query.strip():
            return []
        return [item_id for item_id, _ in index.search(query, n, exclude=exclude)]

    def candidates(
        self,
        profile: np.ndarray | None,
        lexical_query: str,
        scene: str,
        n: int,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        """Up to n fused candidates, best first, none of them in `exclude`."""
        s = self._settings
        exclude = set(exclude)
        dense_ids = (
            self.dense(profile, scene, max(n, s.dense_candidates), exclude) if profile is not None else []
        )
        lexical_ids = self.lexical(lexical_query, scene, max(n, s.lexical_candidates), exclude)
        fused = reciprocal_rank_fusion([dense_ids, lexical_ids], [1.0, s.lexical_weight], s.rrf_k)
        return [
            Candidate(item_id=i, score=score, dense_rank=ranks[0], lexical_rank=ranks[1])
            for i, score, ranks in fused[:n]
        ]
