"""User profile vectors: the first, simple form of cross-scene transfer (one shared text space)."""

from __future__ import annotations

import numpy as np


def recency_weights(n: int, decay: float) -> np.ndarray:
    """Weights for a history of n items, oldest first: the newest weighs 1, each older one `decay` less."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def mean_profile(vectors: np.ndarray, decay: float) -> np.ndarray | None:
    """Recency-weighted mean of normalised item vectors, renormalised; None for an empty history."""
    if len(vectors) == 0:
        return None
    weights = recency_weights(len(vectors), decay)
    profile = (weights[:, None] * vectors.astype(np.float64)).sum(axis=0)
    norm = np.linalg.norm(profile)
    if norm == 0:
        return None
    return (profile / norm).astype(np.float32)
