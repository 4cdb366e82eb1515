"""Recommendations steered by a conversation: the user's profile pulled toward a query text or an anchor
item, with titles that contain a banned word filtered out.

"for a child" becomes an extra dense query (the profile and the query's vector, blended) and an extra
BM25 query; "not paper" becomes a filter on titles; "more like #2" uses that item's vector and title as
the query. Without any of these it is exactly `Recommender.recommend_for_history`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..models import Recommendation, UserHistory
from ..recommend.recommender import Recommender
from ..recommend.retrieval import fused_candidates, lexical_query
from .actions import STOPWORDS, Constraint

QUERY_WEIGHT = 0.6  # share of the steering vector in the dense query; the rest is the user's profile
ANCHOR_WEIGHT = 0.75


@dataclass
class Steering:
    """Everything a session adds to the plain profile query."""

    constraints: Sequence[str] = ()
    anchor: str | None = None
    exclude: Collection[str] = field(default_factory=set)

    @property
    def parsed(self) -> Constraint:
        merged = Constraint()
        for text in self.constraints:
            c = Constraint.parse(text)
            merged.query = " ".join(p for p in (merged.query, c.query) if p)
            merged.banned += [w for w in c.banned if w not in merged.banned]
        return merged

    @property
    def active(self) -> bool:
        return bool(self.constraints or self.anchor)


def _content_words(text: str) -> str:
    """A BM25 query without the words every title has ("the", "of"), which would drown the rest."""
    return " ".join(w for w in re.findall(r"[\w'-]+", text.lower()) if w not in STOPWORDS)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def steered_recommendations(
    recommender: Recommender, history: UserHistory, scene: str, k: int, steering: Steering
) -> list[Recommendation]:
    """Top-k of `scene` for the history, pulled toward the steering's query/anchor, filtered by its bans."""
    if not steering.active:
        return recommender.recommend_for_history(history, scene, k, exclude=steering.exclude)
    recommender.check_scene(scene)
    settings = recommender.settings.retrieval
    constraint = steering.parsed
    exclude = set(steering.exclude) | set(history.item_ids)
    texts: list[str] = []
    steer: list[np.ndarray] = []
    weight = QUERY_WEIGHT
    if steering.anchor is not None:
        anchor = recommender.items.get_items([steering.anchor]).get(steering.anchor)
        if anchor is not None:
            exclude.add(anchor.item_id)
            steer.append(recommender.item_vectors([anchor.item_id])[0])
            texts.append(anchor.title)
            weight = ANCHOR_WEIGHT
    if constraint.query:
        steer.append(np.asarray(recommender.encoder.encode([constraint.query])[0], dtype=np.float32))
        texts.append(constraint.query)
    profile = recommender.user_vectors([history], scene)[0] if history.entries else None
    if steer:
        target = _unit(np.mean([_unit(v) for v in steer], axis=0))
        query = target if profile is None else _unit((1 - weight) * profile + weight * target)
        lexical = _content_words(" ".join(texts))
    else:  # only bans: the plain profile query, filtered
        query, lexical = profile, lexical_query(history, settings)
    if query is None:
        ranked = recommender.popular(scene, min(settings.max_k, k + 200), exclude=exclude)
        return [r for r in ranked if constraint.allows(r.title)][:k]
    n = min(settings.max_k, 4 * k + 50)  # room for the title filter
    candidates = fused_candidates(
        recommender.dense_index(scene),
        recommender.lexical.get(scene),
        [query],
        [lexical],
        [exclude],
        n,
        settings,
    )[0]
    titles = recommender.items.get_items([c.item_id for c in candidates])
    kept = [c for c in candidates if constraint.allows(titles[c.item_id].title)][:k]
    return recommender.with_evidence(kept, history, scene)
