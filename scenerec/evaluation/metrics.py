"""Ranking metrics for one held-out target per case, on plain arrays.

Tie policy (used everywhere in the harness): a target whose score equals the scores of `t` other
candidates is equally likely to sit at any of the `t + 1` positions those items share, and every metric
is the expectation over that uniform tie-break. With `g` candidates scored strictly higher, the target's
position is uniform on `g + 1 … g + t + 1`, so

    HR@k   = clip(k - g, 0, t + 1) / (t + 1)
    NDCG@k = sum_{r = g+1}^{min(g+t+1, k)} 1 / log2(r + 1)  /  (t + 1)      (one relevant item: IDCG = 1)
    MRR    = sum_{r = g+1}^{g+t+1} 1 / r  /  (t + 1)

and the reported mean rank is `1 + g + t / 2`. Without ties these are the usual values; a method that
scores everything the same gets exactly the random baseline (HR@k = k / n), never a lucky rank 1.
A target that cannot be ranked (score -inf: excluded because it is in the user's history, or not an item
of the scene) is a miss: 0 for every metric, and it stays in the denominator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METRICS: tuple[str, ...] = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")


def target_positions(scores: np.ndarray, target_col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (# candidates strictly above the target, # other candidates tied with it, rankable).

    `scores` is (n, m) with -inf for excluded candidates; `target_col` (n,) indexes the target's column,
    -1 for a target that is not among the columns. NaN scores are treated as -inf.
    """
    scores = np.asarray(scores, dtype=np.float64)
    target_col = np.asarray(target_col, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(target_col):
        raise ValueError(f"scores {scores.shape} and targets {target_col.shape} do not match")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    rows = np.arange(len(scores))
    present = target_col >= 0
    target = np.full(len(scores), -np.inf)
    target[present] = scores[rows[present], target_col[present]]
    rankable = np.isfinite(target)
    greater = (scores > target[:, None]).sum(axis=1)
    ties = (scores == target[:, None]).sum(axis=1) - 1
    greater = np.where(rankable, greater, 0)
    ties = np.where(rankable, ties, 0)
    return greater.astype(np.int64), ties.astype(np.int64), rankable


def _discount_cumsum(n: int) -> np.ndarray:
    """D[r] = sum_{i=1}^{r} 1 / log2(i + 1), with D[0] = 0."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def _harmonic_cumsum(n: int) -> np.ndarray:
    """H[r] = sum_{i=1}^{r} 1 / i, with H[0] = 0."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def hit_rate(greater: np.ndarray, ties: np.ndarray, rankable: np.ndarray, k: int) -> np.ndarray:
    """Per-case expected HR@k (probability that the target is in the top k)."""
    greater, ties = np.asarray(greater), np.asarray(ties)
    hit = np.clip(k - greater, 0, ties + 1) / (ties + 1)
    return np.where(rankable, hit, 0.0)


def ndcg(greater: np.ndarray, ties: np.ndarray, rankable: np.ndarray, k: int) -> np.ndarray:
    """Per-case expected NDCG@k with one relevant item."""
    greater, ties = np.asarray(greater), np.asarray(ties)
    d = _discount_cumsum(k)
    upper = np.minimum(greater + ties + 1, k)
    lower = np.minimum(greater, k)
    value = (d[upper] - d[lower]) / (ties + 1)
    return np.where(rankable, value, 0.0)


def reciprocal_rank(greater: np.ndarray, ties: np.ndarray, rankable: np.ndarray) -> np.ndarray:
    """Per-case expected reciprocal rank."""
    greater, ties = np.asarray(greater), np.asarray(ties)
    if len(greater) == 0:
        return np.zeros(0)
    h = _harmonic_cumsum(int((greater + ties).max()) + 1)
    value = (h[greater + ties + 1] - h[greater]) / (ties + 1)
    return np.where(rankable, value, 0.0)


def mean_rank(greater: np.ndarray, ties: np.ndarray, rankable: np.ndarray) -> np.ndarray:
    """Per-case expected 1-based rank; inf for a target that cannot be ranked."""
    return np.where(rankable, 1.0 + np.asarray(greater) + np.asarray(ties) / 2.0, np.inf)


def case_metrics(greater: np.ndarray, ties: np.ndarray, rankable: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of METRICS, per case."""
    return {
        "hr@1": hit_rate(greater, ties, rankable, 1),
        "hr@5": hit_rate(greater, ties, rankable, 5),
        "hr@10": hit_rate(greater, ties, rankable, 10),
        "ndcg@5": ndcg(greater, ties, rankable, 5),
        "ndcg@10": ndcg(greater, ties, rankable, 10),
        "mrr": reciprocal_rank(greater, ties, rankable),
    }


def _resampled_sums(
    columns: Sequence[np.ndarray], clusters: Sequence[object] | np.ndarray | None, n_bootstrap: int, seed: int
) -> list[np.ndarray]:
    """Per column, its sum in each of `n_bootstrap` resamples (with replacement) of the cases, or of
    whole clusters when given; every column is summed over the same resamples."""
    if clusters is not None:
        _, inverse = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
        columns = [np.bincount(inverse, weights=c) for c in columns]
    units = len(columns[0])
    draws = np.random.default_rng(seed).integers(0, units, size=(n_bootstrap, units))
    return [c[draws].sum(axis=1) for c in columns]


def bootstrap_ci(
    values: np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile bootstrap interval.

    With `clusters` (e.g. the user of each case) whole clusters are resampled, because cases of one
    user share a history and are not independent. Same inputs and seed, same interval.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if n_bootstrap <= 0:
        return mean, mean, mean
    sums, counts = _resampled_sums([values, np.ones(len(values))], clusters, n_bootstrap, seed)
    means = sums / counts
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # The interval always holds the point estimate (percentile intervals of skewed, tiny samples may not).
    return mean, float(min(low, mean)), float(max(high, mean))


def paired_ratio_ci(
    numerator: np.ndarray,
    denominator: np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(ratio, low, high): mean(numerator) / mean(denominator) over the same cases, with a paired
    percentile bootstrap interval.

    Both arrays are per-case values of two methods on the same cases; every resample draws the same
    clusters (users) for both, so the interval reflects how differently the two methods did on the same
    people; it is narrower than the two methods' separate intervals suggest when they win and lose on
    the same cases. A resample whose denominator is 0 has an infinite ratio; when both methods score 0
    on every case all three are NaN.
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape:
        raise ValueError(f"paired values differ in shape: {num.shape} and {den.shape}")
    if len(num) == 0:
        return float("nan"), float("nan"), float("nan")
    if den.sum() > 0:
        ratio = float(num.sum() / den.sum())
    else:
        ratio = float("inf") if num.sum() > 0 else float("nan")
    if n_bootstrap <= 0 or math.isnan(ratio):
        return ratio, ratio, ratio
    top, bottom = _resampled_sums([num, den], clusters, n_bootstrap, seed)
    safe = np.where(bottom > 0, bottom, 1.0)
    ratios = np.where(bottom > 0, top / safe, np.inf)
    alpha = (1.0 - level) / 2.0
    # inverted_cdf picks resampled values, so infinite ratios never meet inf - inf in interpolation
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha], method="inverted_cdf")
    return ratio, float(min(low, ratio)), float(max(high, ratio))


def top_k_columns(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, the columns of the k best finite scores, best first; ties broken by lower column."""
    scores = np.asarray(scores)
    n, m = scores.shape
    k_eff = min(k, m)
    if k_eff == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(n)]
    safe = np.where(np.isnan(scores), -np.inf, scores)
    if k_eff < m:
        part = np.argpartition(-safe, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.tile(np.arange(m), (n, 1))
    result = []
    for row, cols in zip(safe, part):
        # argpartition may cut a tie group arbitrarily; take every column tied with the k-th best too,
        # then order by (score desc, column asc) so the list does not depend on the partition.
        kth = row[cols].min()
        if np.isfinite(kth):
            cols = np.flatnonzero(row >= kth)
        else:
            cols = cols[np.isfinite(row[cols])]
        order = np.lexsort((cols, -row[cols]))
        result.append(cols[order][:k_eff].astype(np.int64))
    return result
