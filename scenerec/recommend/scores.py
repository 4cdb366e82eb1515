"""Readable scores: the ranking model's order turned into a number a person can compare across lists.

`percentile(rank, n)` is the share of the scene's items that the ranking model puts at or below this
one for this user: 1.0 for the first of the scene, 0.5 for the middle, in [0, 1] and strictly falling
with the rank, whatever the model's raw scale (RRF 1/(60 + rank), a transfer logit, a count). The raw
score stays in `Recommendation.raw_score` (`--json`).
"""

from __future__ import annotations


def percentile(rank: int, n_items: int) -> float:
    """1 - (rank - 1) / n_items, rounded to 6 places; rank is 1-based among the scene's n_items."""
    if n_items <= 0 or rank < 1:
        raise ValueError(f"percentile needs rank >= 1 and n_items >= 1, got {rank} of {n_items}")
    return round(max(0.0, 1.0 - (rank - 1) / n_items), 6)


def top_share(score: float) -> str:
    """How a percentile is said: 'top 0.3%' of the scene."""
    share = max(0.0, 1.0 - score) * 100
    return f"top {share:.1f}%" if share >= 0.1 else "top 0.1%"
